//! The REST front end, driven with curl like the original Hyperfleet's README.
mod common;

use common::{require_docker, Daemon};

fn rest_daemon() -> (Daemon, String) {
    let d = Daemon::start_with_env(&[("HYPERFLEET_LISTEN", "127.0.0.1:0")]);
    let addr = std::fs::read_to_string(d.state.join("rest.addr")).expect("rest.addr");
    (d, format!("http://{}", addr.trim()))
}

#[test]
fn rest_and_filesystem_share_one_core() {
    require_docker();
    let (d, api) = rest_daemon();
    let script = format!(
        r#"set -e
        api={api}
        code=$(curl -s -o /dev/null -w '%{{http_code}}' -X POST $api/machines \
            -H 'Content-Type: application/json' \
            -d '{{"name":"my-container","runtime_type":"docker","vcpu_count":1,"mem_size_mib":64,"image":"'"$IMAGE"'","cmd":["sleep","600"],"env":{{"NODE_ENV":"production"}}}}')
        echo "create $code"
        cat machines/my-container/status
        id=$(cat machines/my-container/id)
        curl -sf -X POST $api/machines/$id/start >/dev/null
        cat machines/my-container/status
        curl -sf "$api/machines?status=running" | grep -c '"name":"my-container"'
        curl -sf "$api/machines?runtime_type=firecracker"; echo
        curl -sf -X POST $api/machines/my-container/exec -d '{{"cmd":["sh","-c","echo $NODE_ENV; exit 3"],"timeout":5}}'; echo
        mkdir machines/from-fs
        curl -sf $api/machines/from-fs | grep -o '"status":"pending"'
        curl -s -o /dev/null -w 'delete-running %{{http_code}}\n' -X DELETE $api/machines/my-container
        curl -sf -X POST "$api/machines/my-container/shutdown?timeout=1" | grep -o '"status":"stopped"'
        curl -s -o /dev/null -w 'delete %{{http_code}}\n' -X DELETE $api/machines/$id
        ls machines
        "#
    );
    let out = d.ok(&script);
    assert_eq!(
        out,
        "create 201\npending\nrunning\n1\n[]\n\
         {\"exit_code\":3,\"stderr\":\"\",\"stdout\":\"production\\n\"}\n\
         \"status\":\"pending\"\ndelete-running 409\n\"status\":\"stopped\"\ndelete 204\nfrom-fs\n"
    );
    assert!(d.containers().is_empty(), "container left behind");
}

#[test]
fn rest_errors_have_status_and_json_body_and_change_nothing() {
    require_docker();
    let (d, api) = rest_daemon();
    let code = |args: &str| -> String {
        d.ok(&format!(
            "b=$(mktemp) && curl -s -o $b -w '%{{http_code}}' {args} && echo && cat $b && echo && rm $b"
        ))
    };
    assert_eq!(
        code(&format!("-X POST {api}/machines -d 'not json'"))
            .lines()
            .next(),
        Some("400")
    );
    let out = code(&format!(
        "-X POST {api}/machines -d '{{\"name\":\"w\",\"imgae\":\"x\"}}'"
    ));
    assert!(
        out.starts_with("400\n{\"error\":\"validation_error\""),
        "{out}"
    );
    let out = code(&format!(
        "-X POST {api}/machines -d '{{\"name\":\"../x\"}}'"
    ));
    assert!(out.starts_with("400\n{\"error\":\"invalid_name\""), "{out}");
    assert_eq!(
        d.ok("ls machines"),
        "",
        "a rejected create created something"
    );

    d.ok("mkdir machines/w");
    let out = code(&format!("-X POST {api}/machines -d '{{\"name\":\"w\"}}'"));
    assert!(
        out.starts_with("409\n{\"error\":\"already_exists\""),
        "{out}"
    );
    let out = code(&format!("-X POST {api}/machines/w/start"));
    assert!(
        out.starts_with("422\n{\"error\":\"incomplete_config\""),
        "{out}"
    );
    assert!(d.read("machines/w/error").contains("needs image"));
    let out = code(&format!("-X POST {api}/machines/w/explode"));
    assert!(out.starts_with("400\n"), "{out}");
    let out = code(&format!("{api}/machines/nope"));
    assert!(out.starts_with("404\n{\"error\":\"not_found\""), "{out}");
    let out = code(&format!(
        "-X POST '{api}/machines/w/wait?status=running&timeout=0.2'"
    ));
    assert!(out.starts_with("504\n{\"error\":\"timeout\""), "{out}");
    let out = d.ok(&format!(
        "big=$(mktemp) && head -c 1100000 /dev/zero | tr '\\0' ' ' > $big && curl -s -o /dev/null -w '%{{http_code}}' -X POST {api}/machines --data-binary @$big; rm $big"
    ));
    assert_eq!(out, "413");
    assert_eq!(d.read("machines/w/status"), "pending\n");
    let health = d.ok(&format!("curl -sf {api}/health"));
    assert!(
        health.contains("\"docker\":{\"available\":true"),
        "{health}"
    );
}

#[test]
fn a_client_that_hangs_up_does_not_leave_a_machine_half_stopped() {
    require_docker();
    let (d, api) = rest_daemon();
    d.machine("web", r#"["sleep","600"]"#);
    d.ok("echo start > machines/web/ctl");
    // `sleep` ignores SIGTERM, so stop takes its 10 s grace; the client gives up after 1 s.
    let out = d.sh(&format!("curl -s -m 1 -X POST {api}/machines/web/stop"));
    assert!(!out.status.success(), "curl should have timed out");
    d.ok("/bin/echo 'wait stopped 30' > machines/web/ctl");
    d.ok("echo start > machines/web/ctl && echo kill > machines/web/ctl");
}
