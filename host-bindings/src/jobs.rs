//! The job executor of an isolate: promise and generic jobs run from a plain queue
//! (the hot path after every handler), anything rarer goes to Boa's own executor.

use boa_engine::job::{Job, JobExecutor, SimpleJobExecutor};
use boa_engine::{Context, JsResult};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

/// Runs an isolate's jobs; cheap to call when there is nothing to do.
#[derive(Default)]
pub(crate) struct Jobs {
    queue: RefCell<VecDeque<Job>>,
    other: Rc<SimpleJobExecutor>,
    other_pending: Cell<bool>,
}

impl JobExecutor for Jobs {
    fn enqueue_job(self: Rc<Self>, job: Job, context: &mut Context) {
        match job {
            Job::PromiseJob(_) | Job::GenericJob(_) => self.queue.borrow_mut().push_back(job),
            other => {
                self.other_pending.set(true);
                self.other.clone().enqueue_job(other, context);
            }
        }
    }

    fn run_jobs(self: Rc<Self>, context: &mut Context) -> JsResult<()> {
        loop {
            let next = self.queue.borrow_mut().pop_front();
            match next {
                Some(Job::PromiseJob(job)) => {
                    job.call(context)?;
                }
                Some(Job::GenericJob(job)) => {
                    job.call(context)?;
                }
                Some(other) => self.other.clone().enqueue_job(other, context),
                None if self.other_pending.replace(false) => {
                    self.other.clone().run_jobs(context)?
                }
                None => return Ok(()),
            }
        }
    }
}
