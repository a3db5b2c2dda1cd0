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

/// Polls its future only when that future's own waker fired (and on the first poll), not every
/// time the task is woken for something else.
///
/// A connection parks on `select(readable, response)`. Each wake-up of a response (a reply
/// from another shard, a poke while the gRPC core works) re-polled the pending io_uring `peek`
/// too, and glommio 0.9 keeps a clone of the task's waker per poll of a pending source: the
/// task's waker count (an `i16`) overflowed and the shard panicked ("Waker invariant broken").
/// Behind this wrapper the source only ever sees this wrapper's own (`Arc`) waker, and only
/// when it has something to say.
pub struct PollOnOwnWake<F> {
    inner: Pin<Box<F>>,
    flag: std::sync::Arc<OwnWake>,
    first: bool,
}

struct OwnWake {
    woken: std::sync::atomic::AtomicBool,
    parent: futures::task::AtomicWaker,
}

impl futures::task::ArcWake for OwnWake {
    fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
        arc_self
            .woken
            .store(true, std::sync::atomic::Ordering::Release);
        arc_self.parent.wake();
    }
}

impl<F: Future> PollOnOwnWake<F> {
    pub fn new(inner: F) -> Self {
        PollOnOwnWake {
            inner: Box::pin(inner),
            flag: std::sync::Arc::new(OwnWake {
                woken: std::sync::atomic::AtomicBool::new(false),
                parent: futures::task::AtomicWaker::new(),
            }),
            first: true,
        }
    }
}

impl<F: Future> Future for PollOnOwnWake<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.flag.parent.register(cx.waker());
        let woken = self
            .flag
            .woken
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        if !(self.first || woken) {
            return Poll::Pending;
        }
        self.first = false;
        let waker = futures::task::waker(self.flag.clone());
        let mut own = Context::from_waker(&waker);
        self.inner.as_mut().poll(&mut own)
    }
}

#[cfg(test)]
mod poll_on_own_wake_tests {
    use super::*;
    use std::cell::Cell;

    /// Pending until `ready`; counts its polls and keeps the last waker it was given.
    struct Probe<'a> {
        polls: &'a Cell<usize>,
        ready: &'a Cell<bool>,
        waker: &'a RefCell<Option<Waker>>,
    }

    impl Future for Probe<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.set(self.polls.get() + 1);
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            if self.ready.get() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn inner_is_polled_only_on_its_own_wake() {
        let (polls, ready, waker) = (Cell::new(0), Cell::new(false), RefCell::new(None));
        let mut f = Box::pin(PollOnOwnWake::new(Probe {
            polls: &polls,
            ready: &ready,
            waker: &waker,
        }));
        let task = futures::task::noop_waker();
        let mut cx = Context::from_waker(&task);
        assert!(f.as_mut().poll(&mut cx).is_pending());
        // The task is woken for other reasons many times: the inner future is left alone.
        for _ in 0..100 {
            assert!(f.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.get(), 1);
        // Its own waker fires: polled once more, and completes when ready.
        ready.set(true);
        waker.borrow_mut().take().unwrap().wake();
        assert!(f.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.get(), 2);
    }
}
