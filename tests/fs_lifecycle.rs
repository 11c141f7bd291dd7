mod common;

use common::{require_docker, Daemon};

#[test]
fn full_lifecycle_from_a_shell() {
    require_docker();
    let d = Daemon::start();
    assert!(d.read("README").contains("every machine is a directory"));
    d.ok("mkdir machines/web");
    assert_eq!(d.read("machines/web/status"), "pending\n");
    assert_eq!(d.read("machines/web/error"), "");
    d.ok(r#"echo '{"runtime_type":"docker","image":"'"$IMAGE"'","cmd":["sleep","600"],"env":{"GREETING":"hi"}}' > machines/web/config"#);
    let config = d.read("machines/web/config");
    assert!(config.contains("\"GREETING\": \"hi\""), "{config}");

    d.ok("echo start > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "running\n");
    assert_eq!(d.ok("ls by-status/running"), "web\n");
    assert_eq!(d.ok("ls by-runtime/docker"), "web\n");
    assert_eq!(
        d.ok("readlink by-status/running/web"),
        "../../machines/web\n"
    );
    assert_eq!(d.containers().len(), 1);

    let out = d.ok("echo 'sh -c \"echo $GREETING; echo oops >&2; exit 3\"' > machines/web/exec && cat machines/web/exec machines/web/exec.stderr machines/web/exec.exit");
    assert_eq!(out, "hi\noops\n3\n");

    // The same open file returns its own command's output.
    let out = d.ok("exec 3<>machines/web/exec; echo 'echo mine' >&3; cat <&3");
    assert_eq!(out, "mine\n");

    d.ok("echo pause > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "paused\n");
    d.ok("echo resume > machines/web/ctl");
    d.ok("echo kill > machines/web/ctl");
    assert_eq!(d.read("machines/web/status"), "stopped\n");
    d.ok("rmdir machines/web");
    assert_eq!(d.ok("ls machines"), "");
    assert!(d.containers().is_empty(), "container left behind");
}
