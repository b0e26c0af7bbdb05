//! A server's worker pool: threads that run the commands whose flag (or the server's default)
//! sends them there, so that long handlers do not hold the server's owner.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;

use super::connection::lock;
use crate::status::Error;

pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The queue: jobs, and whether the pool is shutting down.
#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    closing: bool,
}

/// See the module doc.
#[derive(Default)]
pub(crate) struct Pool {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

impl Pool {
    /// Starts `n` threads on the pool.
    pub(crate) fn start(
        self: &std::sync::Arc<Self>,
        n: usize,
    ) -> Result<Vec<JoinHandle<()>>, Error> {
        (0..n)
            .map(|i| {
                let pool = self.clone();
                std::thread::Builder::new()
                    .name(format!("shmcall-worker-{i}"))
                    .spawn(move || pool.run())
                    .map_err(|e| Error::io("cannot start a worker thread", e))
            })
            .collect()
    }

    pub(crate) fn submit(&self, job: Job) {
        lock(&self.jobs).queue.push_back(job);
        self.ready.notify_one();
    }

    /// The workers finish the queue, then end.
    pub(crate) fn stop(&self) {
        lock(&self.jobs).closing = true;
        self.ready.notify_all();
    }

    fn run(&self) {
        loop {
            let job = {
                let mut q = lock(&self.jobs);
                loop {
                    if let Some(job) = q.queue.pop_front() {
                        break job;
                    }
                    if q.closing {
                        return;
                    }
                    q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            job();
        }
    }
}
