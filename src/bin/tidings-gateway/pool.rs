//! A fixed set of worker threads with a bounded queue: work that may block (a backend call, a
//! publish API request waiting for the loop) runs here, never on the loop or dispatcher threads.
//! When the queue is full a job is refused at once, so a slow consumer cannot grow memory.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The pool; cheap to clone (all clones feed the same workers).
#[derive(Clone)]
pub struct Pool {
    queue: SyncSender<Job>,
}

/// The queue is full (or the workers are gone): the job was not taken.
#[derive(Debug)]
pub struct Busy;

impl Pool {
    /// Starts `workers` threads named `name-N`, with room for `queue` waiting jobs.
    pub fn new(name: &str, workers: usize, queue: usize) -> std::io::Result<Pool> {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            let thread = format!("{name}-{i}");
            std::thread::Builder::new()
                .name(thread.clone())
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        // A panicking job must not take the worker with it.
                        Ok(job) => {
                            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err()
                            {
                                log::error!(thread = thread.as_str(); "a job panicked");
                            }
                        }
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Pool { queue: tx })
    }

    /// Queues a job, or refuses it at once when the queue is full.
    pub fn try_run(&self, job: impl FnOnce() + Send + 'static) -> Result<(), Busy> {
        match self.queue.try_send(Box::new(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn jobs_run_and_a_full_queue_refuses_at_once() -> Result<(), Box<dyn std::error::Error>> {
        let pool = Pool::new("t", 1, 1)?;
        let (gate_tx, gate_rx) = channel::<()>();
        let (done_tx, done_rx) = channel();
        let d = done_tx.clone();
        pool.try_run(move || {
            let _ = gate_rx.recv_timeout(Duration::from_secs(5));
            let _ = d.send(1);
        })
        .map_err(|_| "first job refused")?;
        // The worker may not have taken the first job yet: fill the queue until refused.
        let mut refused = false;
        for _ in 0..3 {
            let d = done_tx.clone();
            if pool
                .try_run(move || {
                    let _ = d.send(2);
                })
                .is_err()
            {
                refused = true;
                break;
            }
        }
        assert!(refused, "a full queue refuses");
        gate_tx.send(())?;
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5))?, 1);
        Ok(())
    }
}
