//! Named handler chains: a lifecycle operation (start, restore) as an ordered
//! list of named steps that a caller can extend before running it, as
//! firecracker-go-sdk's `Handlers` allow: prepend or append a step, put one
//! before or after a named one, replace or remove one.
//!
//! ```
//! use hyperfleet::runtime::vm::Chain;
//!
//! #[derive(Clone)]
//! struct Vm;
//!
//! let mut start: Chain<Vm> = Chain::new();
//! start.append("spawn", |_vm: Vm| async { Ok(()) });
//! start.append("boot", |_vm: Vm| async { Ok(()) });
//! start.insert_before("boot", "log-boot", |_vm: Vm| async { Ok(()) }).unwrap();
//! start.remove("spawn");
//! assert_eq!(start.names(), ["log-boot", "boot"]);
//! ```
//!
//! Each step gets its own clone of the context (a cheap handle such as a
//! VM `Machine`). The first step that fails stops the chain; its error is
//! the chain's, unchanged (each step says what it was doing).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{Error, Result};

/// What a step returns.
pub type StepFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

type StepFn<C> = Arc<dyn Fn(C) -> StepFuture + Send + Sync>;

/// One named step.
pub struct Step<C> {
    name: String,
    run: StepFn<C>,
}

impl<C> Clone for Step<C> {
    fn clone(&self) -> Self {
        Step {
            name: self.name.clone(),
            run: self.run.clone(),
        }
    }
}

impl<C> Step<C> {
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An ordered list of uniquely named steps.
pub struct Chain<C> {
    steps: Vec<Step<C>>,
}

impl<C> Clone for Chain<C> {
    fn clone(&self) -> Self {
        Chain {
            steps: self.steps.clone(),
        }
    }
}

impl<C> Default for Chain<C> {
    fn default() -> Self {
        Chain { steps: Vec::new() }
    }
}

impl<C> std::fmt::Debug for Chain<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|s| &s.name))
            .finish()
    }
}

fn step<C, F, Fut>(name: &str, f: F) -> Step<C>
where
    F: Fn(C) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    Step {
        name: name.to_owned(),
        run: Arc::new(move |ctx| Box::pin(f(ctx))),
    }
}

impl<C: Send + 'static> Chain<C> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The step names, in the order they run.
    pub fn names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.name.as_str()).collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// Adds a step at the end. A step of the same name already in the chain
    /// is taken out first: names are unique.
    pub fn append<F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.remove(name);
        self.steps.push(step(name, f));
        self
    }

    /// Adds a step at the start (replacing one of the same name).
    pub fn prepend<F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.remove(name);
        self.steps.insert(0, step(name, f));
        self
    }

    /// Adds a step right before `anchor`; fails if there is no such step.
    pub fn insert_before<F, Fut>(&mut self, anchor: &str, name: &str, f: F) -> Result<&mut Self>
    where
        F: Fn(C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.insert_at(anchor, 0, name, step(name, f))
    }

    /// Adds a step right after `anchor`; fails if there is no such step.
    pub fn insert_after<F, Fut>(&mut self, anchor: &str, name: &str, f: F) -> Result<&mut Self>
    where
        F: Fn(C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.insert_at(anchor, 1, name, step(name, f))
    }

    fn insert_at(
        &mut self,
        anchor: &str,
        after: usize,
        name: &str,
        new: Step<C>,
    ) -> Result<&mut Self> {
        if anchor != name {
            self.remove(name);
        }
        let at = self.position(anchor).ok_or_else(|| self.no_step(anchor))?;
        if anchor == name {
            self.steps[at] = new;
        } else {
            self.steps.insert(at + after, new);
        }
        Ok(self)
    }

    /// Puts `f` in place of the step `name`; fails if there is none.
    pub fn replace<F, Fut>(&mut self, name: &str, f: F) -> Result<&mut Self>
    where
        F: Fn(C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let at = self.position(name).ok_or_else(|| self.no_step(name))?;
        self.steps[at] = step(name, f);
        Ok(self)
    }

    /// Takes the step `name` out; says whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.steps.len();
        self.steps.retain(|s| s.name != name);
        self.steps.len() != before
    }

    fn no_step(&self, name: &str) -> Error {
        Error::InvalidCommand(format!(
            "no step {name:?} in the chain (its steps: {})",
            self.names().join(", ")
        ))
    }
}

impl<C: Clone + Send + 'static> Chain<C> {
    /// Runs the steps in order, each with a clone of `ctx`; stops at the
    /// first failure and returns it.
    pub async fn run(&self, ctx: C) -> Result<()> {
        for s in &self.steps {
            tracing::trace!(step = %s.name, "running step");
            (s.run)(ctx.clone()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type Trace = Arc<Mutex<Vec<String>>>;

    fn recorder(name: &str) -> impl Fn(Trace) -> StepFuture + Send + Sync {
        let name = name.to_owned();
        move |t: Trace| {
            let name = name.clone();
            Box::pin(async move {
                t.lock().unwrap().push(name);
                Ok(())
            })
        }
    }

    fn chain(names: &[&str]) -> Chain<Trace> {
        let mut c = Chain::new();
        for n in names {
            c.append(n, recorder(n));
        }
        c
    }

    #[tokio::test]
    async fn steps_run_in_order_and_can_be_moved_replaced_and_removed() {
        let trace: Trace = Arc::default();
        let mut c = chain(&["spawn", "configure", "boot"]);
        c.prepend("validate", recorder("validate"));
        c.insert_after("configure", "network", recorder("network"))
            .unwrap();
        c.insert_before("boot", "log", recorder("log")).unwrap();
        c.replace("configure", recorder("configure-v2")).unwrap();
        assert!(c.remove("validate"));
        assert!(!c.remove("validate"));
        // Appending a name that exists moves it.
        c.append("spawn", recorder("spawn"));
        assert_eq!(c.names(), ["configure", "network", "log", "boot", "spawn"]);
        c.run(trace.clone()).await.unwrap();
        assert_eq!(
            *trace.lock().unwrap(),
            ["configure-v2", "network", "log", "boot", "spawn"]
        );
        let err = c.insert_before("nope", "x", recorder("x")).unwrap_err();
        assert!(err.to_string().contains("no step \"nope\""), "{err}");
        assert!(c.replace("nope", recorder("x")).is_err());
        assert_eq!(c.len(), 5);
    }

    #[tokio::test]
    async fn the_first_failure_stops_the_chain() {
        let trace: Trace = Arc::default();
        let mut c = chain(&["a", "c"]);
        c.insert_after("a", "b", |_t: Trace| async {
            Err(Error::Runtime("b broke".into()))
        })
        .unwrap();
        let err = c.run(trace.clone()).await.unwrap_err();
        assert_eq!(err.to_string(), "b broke");
        assert_eq!(*trace.lock().unwrap(), ["a"]);
    }
}
