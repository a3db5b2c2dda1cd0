//! Small shard-local primitives: a notifier that wakes every waiter, and a clock helper.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wakes every task waiting on it each time `notify_all` is called. Shard-local (`!Send`): a
/// partition's fetch waiters live on the partition's shard.
#[derive(Default, Clone)]
pub struct Notify {
    inner: Rc<RefCell<NotifyInner>>,
}

#[derive(Default)]
struct NotifyInner {
    generation: u64,
    wakers: Vec<Waker>,
}

impl Notify {
    pub fn notify_all(&self) {
        let wakers = {
            let mut inner = self.inner.borrow_mut();
            inner.generation += 1;
            std::mem::take(&mut inner.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// A future that completes at the next `notify_all` after this call.
    pub fn notified(&self) -> Notified {
        Notified {
            inner: self.inner.clone(),
            generation: self.inner.borrow().generation,
        }
    }
}

pub struct Notified {
    inner: Rc<RefCell<NotifyInner>>,
    generation: u64,
}

impl Future for Notified {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.inner.borrow_mut();
        if inner.generation != self.generation {
            return Poll::Ready(());
        }
        // Waiters are few per partition and short-lived; a duplicate registration after a
        // spurious poll costs one extra wake.
        if !inner.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            inner.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn notified_completes_only_after_notify() {
        let n = Notify::default();
        let mut f = n.notified();
        assert!((&mut f).now_or_never().is_none());
        n.notify_all();
        assert!(f.now_or_never().is_some());
    }
}
