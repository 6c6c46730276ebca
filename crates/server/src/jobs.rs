//! Long operations that the API starts and the console follows: rule trials now, imports
//! and exports as they come.
//!
//! A job runs as a task of its own and reports progress (done of total, in the job's own
//! unit); `GET /api/v1/jobs/{id}` shows its state and, once it ended, its result or error.
//! Only the user who started a job (or an administrator) may read it. Jobs are kept in
//! memory for an hour after they end: they are answers to a person waiting at a screen,
//! not records (what a job changes is recorded where it is changed).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::node::{NodeError, Role, User};

/// How long an ended job stays readable.
const KEEP_ENDED: Duration = Duration::from_secs(3600);
/// Jobs one user may have running at once.
const RUNNING_PER_USER: usize = 4;

/// The jobs of a node.
#[derive(Default)]
pub(crate) struct Jobs {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

/// One job, as its task updates it.
pub(crate) struct Job {
    id: String,
    kind: &'static str,
    owner: String,
    started_at: DateTime<Utc>,
    done: AtomicU64,
    total: AtomicU64,
    /// Set once it ended: the result, or what went wrong.
    outcome: Mutex<Option<(Instant, Result<Value, String>)>>,
}

impl Job {
    /// The job's id (what `GET /api/v1/jobs/{id}` takes).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Sets how much there is to do.
    pub(crate) fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// Counts work done.
    pub(crate) fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    fn ended_at(&self) -> Option<Instant> {
        self.outcome.lock().expect("job lock").as_ref().map(|(at, _)| *at)
    }

    fn json(&self) -> Value {
        let outcome = self.outcome.lock().expect("job lock");
        let (state, result, error) = match outcome.as_ref() {
            None => ("running", None, None),
            Some((_, Ok(v))) => ("done", Some(v.clone()), None),
            Some((_, Err(e))) => ("failed", None, Some(e.clone())),
        };
        json!({
            "id": self.id,
            "kind": self.kind,
            "state": state,
            "started_at": cityward_model::format_time(&self.started_at),
            "progress": {"done": self.done.load(Ordering::Relaxed), "total": self.total.load(Ordering::Relaxed)},
            "result": result,
            "error": error,
        })
    }
}

impl Jobs {
    /// Starts `work` as a job of `user` and answers its first state. `work` gets the job
    /// to report progress on.
    pub(crate) fn start<F, Fut>(&self, kind: &'static str, user: &User, work: F) -> Result<Value, NodeError>
    where
        F: FnOnce(Arc<Job>) -> Fut,
        Fut: Future<Output = Result<Value, NodeError>> + Send + 'static,
    {
        let job = {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            jobs.retain(|_, j| j.ended_at().is_none_or(|at| at.elapsed() < KEEP_ENDED));
            let running = jobs.values().filter(|j| j.owner == user.username && j.ended_at().is_none()).count();
            if running >= RUNNING_PER_USER {
                return Err(NodeError::Conflict(format!(
                    "{} has {running} jobs running already; wait for one to end (GET /api/v1/jobs/ID)",
                    user.username
                )));
            }
            let job = Arc::new(Job {
                id: format!("j{}", crate::auth::random_hex(8)?),
                kind,
                owner: user.username.clone(),
                started_at: Utc::now(),
                done: AtomicU64::new(0),
                total: AtomicU64::new(0),
                outcome: Mutex::new(None),
            });
            jobs.insert(job.id.clone(), job.clone());
            job
        };
        let running = work(job.clone());
        let task_job = job.clone();
        tokio::spawn(async move {
            let outcome = running.await.map_err(|e| e.to_string());
            if let Err(e) = &outcome {
                tracing::warn!(job = %task_job.id, kind = task_job.kind, error = %e, "Job failed.");
            }
            *task_job.outcome.lock().expect("job lock") = Some((Instant::now(), outcome));
        });
        Ok(job.json())
    }

    /// A job's state, for the user who started it or an administrator.
    pub(crate) fn get(&self, user: &User, id: &str) -> Result<Value, NodeError> {
        let jobs = self.jobs.lock().expect("jobs lock");
        match jobs.get(id) {
            Some(job) if job.owner == user.username || user.role == Role::Admin => Ok(job.json()),
            _ => Err(NodeError::NotFound(format!(
                "no job `{id}` of yours; jobs are kept for an hour after they end"
            ))),
        }
    }
}

/// The jobs route; `crate::http::router` merges it.
pub(crate) fn routes() -> axum::Router<Arc<crate::node::Node>> {
    axum::Router::new().route("/api/v1/jobs/{id}", axum::routing::get(get_job))
}

async fn get_job(
    axum::extract::State(node): axum::extract::State<Arc<crate::node::Node>>,
    crate::http::Caller(user): crate::http::Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::Json<Value>, crate::http::ApiError> {
    Ok(axum::Json(node.jobs().get(&user, &id)?))
}
