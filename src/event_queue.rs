// SPDX-License-Identifier: GPL-2.0

//! A snapshot's events, waited for by IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT.

use kernel::alloc::flags::GFP_KERNEL;
use kernel::prelude::*;
use kernel::sync::{Arc, CondVar, SpinLock};
use kernel::time::{msecs_to_jiffies, Ktime};
use kernel::{new_condvar, new_spinlock, pin_init};

use crate::logic::events::{Event, EventRing};

/// Events a snapshot keeps for user space before the oldest give way.
const QUEUE_LEN: usize = 64;

struct Queue {
    ring: EventRing<QUEUE_LEN>,
    closed: bool,
}

/// Why no event was returned.
pub(crate) enum WaitError {
    Timeout,
    Interrupted,
    Closed,
}

/// A FIFO of events with waiters.
#[pin_data]
pub(crate) struct EventQueue {
    #[pin]
    queue: SpinLock<Queue>,
    #[pin]
    cond: CondVar,
}

impl EventQueue {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                queue <- new_spinlock!(Queue { ring: EventRing::new(), closed: false }, "blksnap_events"),
                cond <- new_condvar!("blksnap_events_wait"),
            }),
            GFP_KERNEL,
        )
    }

    /// The monotonic clock in nanoseconds, for event time labels.
    pub(crate) fn now() -> i64 {
        Ktime::ktime_get().to_ns()
    }

    /// Queues an event and wakes one waiter.
    pub(crate) fn push(&self, ev: Event) {
        if !self.queue.lock().ring.push(ev) {
            pr_warn!("event queue full: event {} dropped\n", ev.code);
        }
        self.cond.notify_one();
    }

    /// Wakes every waiter for good: the snapshot is gone.
    pub(crate) fn close(&self) {
        self.queue.lock().closed = true;
        self.cond.notify_all();
    }

    /// Takes the oldest event, waiting up to `timeout_ms` for one.
    pub(crate) fn wait(&self, timeout_ms: u32) -> core::result::Result<Event, WaitError> {
        let mut left = msecs_to_jiffies(timeout_ms);
        let mut q = self.queue.lock();
        loop {
            if let Some(ev) = q.ring.pop() {
                return Ok(ev);
            }
            if q.closed {
                return Err(WaitError::Closed);
            }
            if left == 0 {
                return Err(WaitError::Timeout);
            }
            match self.cond.wait_interruptible_timeout(&mut q, left) {
                kernel::sync::CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
                kernel::sync::CondVarTimeoutResult::Timeout => left = 0,
                kernel::sync::CondVarTimeoutResult::Signal { .. } => {
                    return Err(WaitError::Interrupted)
                }
            }
        }
    }
}
