//! When shards busy-poll, and when they stop because their cores are shared.
//!
//! Spinning takes a wake-up off every request that arrives within `--spin-us`, but only while
//! a spinning shard has its core and the shards it hands work to get theirs at once. When more
//! threads want to run than there are cores (kelp's two shards and a spinning client on a
//! 2-vCPU VM), the scheduler time-slices them in multi-millisecond quanta and a request waits for
//! a slice: p50 of hundreds of microseconds, p99 of milliseconds, a twentieth of the throughput
//! (measured: `scripts/bench-defaults.sh`). The kernel says when that happens: the time a
//! shard's thread spent runnable but waiting for a core (`/proc/thread-self/schedstat`, field
//! 2). It shows on whichever shard waits, which need not be the one spinning (a connection's
//! shard spins while the partition's owner, woken per request, queues behind it), so the
//! backoff is process-wide: every shard then parks as soon as it is idle (as `--spin-us 0` does)
//! for a while, then spins again to see whether the cores are still contended, backing off for
//! longer each time they are. While backed off, each shard also lets the scheduler run it on any
//! of kelp's cores instead of only its own: a shard pinned to the core a busy client thread
//! landed on otherwise waits for that thread's time slice on every wake-up, while another of
//! kelp's cores may be idle (measured: 3,500 against 12,000 records/s with a spinning client on
//! 2 cores). Spinning resumes pinned. `--dedicated-cores` turns all this off, for operators who
//! pin kelp to cores nothing else uses.

use crate::config::limits;
use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The backoff every shard obeys: spinning is off until `epoch + until_ns`.
pub struct SharedSpin {
    epoch: Instant,
    until_ns: AtomicU64,
    backoffs: AtomicU64,
}

impl Default for SharedSpin {
    fn default() -> Self {
        SharedSpin {
            epoch: Instant::now(),
            until_ns: AtomicU64::new(0),
            backoffs: AtomicU64::new(0),
        }
    }
}

impl SharedSpin {
    /// Whether spinning is off at `now`.
    pub fn backed_off_at(&self, now: Instant) -> bool {
        let until = self.until_ns.load(Ordering::Relaxed);
        until != 0 && (now.duration_since(self.epoch).as_nanos() as u64) < until
    }

    /// Whether spinning is off now; reads the clock only once a backoff has ever happened (the
    /// idle loops ask on every turn).
    pub fn backed_off(&self) -> bool {
        let until = self.until_ns.load(Ordering::Relaxed);
        until != 0 && (self.epoch.elapsed().as_nanos() as u64) < until
    }

    fn back_off(&self, until: Instant) {
        let ns = until.duration_since(self.epoch).as_nanos() as u64;
        self.until_ns.fetch_max(ns.max(1), Ordering::Relaxed);
        self.backoffs.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times a shard stopped every shard's spinning.
    pub fn backoffs(&self) -> u64 {
        self.backoffs.load(Ordering::Relaxed)
    }
}

/// One shard's view: its sample window and its own backoff length. Shard-local.
pub struct SpinGovernor {
    configured: Duration,
    adaptive: bool,
    placement: Option<Placement>,
    sched: Option<File>,
    window_start: Cell<Instant>,
    waited_at_start: Cell<u64>,
    /// A backoff was in force during this window: the window says nothing about spinning.
    saw_backoff: Cell<bool>,
    /// Consecutive windows in which the shard waited for a core past the threshold.
    contended: Cell<u64>,
    backoff: Cell<Duration>,
}

impl SpinGovernor {
    /// Made on the shard's own thread, after it was pinned: its affinity now is its home, and
    /// `cores` (`--cores`, or None: those kelp was started on) where it may run while backed off.
    pub fn new(configured: Duration, dedicated_cores: bool, cores: Option<&[usize]>) -> Self {
        let sched = File::open("/proc/thread-self/schedstat").ok();
        let adaptive = !dedicated_cores && !configured.is_zero();
        let g = SpinGovernor {
            configured,
            adaptive,
            placement: adaptive.then(|| Placement::new(cores)).flatten(),
            sched,
            window_start: Cell::new(Instant::now()),
            waited_at_start: Cell::new(0),
            saw_backoff: Cell::new(false),
            contended: Cell::new(0),
            backoff: Cell::new(Duration::from_millis(limits::SPIN_BACKOFF_MIN_MS)),
        };
        g.waited_at_start.set(g.waited_ns());
        g
    }

    /// How long to keep spinning after the last activity: `--spin-us`, or nothing while the
    /// shards are backed off.
    pub fn window(&self, shared: &SharedSpin) -> Duration {
        if self.adaptive && shared.backed_off() {
            self.saw_backoff.set(true);
            return Duration::ZERO;
        }
        self.configured
    }

    /// Called once per spinner turn, on the shard's own thread: at the end of each sample
    /// window, judges whether the shard waited for a core while the shards were spinning.
    /// True when it judged a window.
    pub fn sample(&self, shared: &SharedSpin) -> bool {
        if !self.adaptive {
            return false;
        }
        let now = Instant::now();
        if let Some(p) = &self.placement {
            p.follow(shared.backed_off_at(now));
        }
        let window = Duration::from_millis(limits::SPIN_SAMPLE_MS);
        if now.duration_since(self.window_start.get()) < window {
            return false;
        }
        self.judge(shared, now, self.waited_ns());
        true
    }

    /// Ends a sample window at `now`, when the thread had waited `waited` ns for a core in all.
    fn judge(&self, shared: &SharedSpin, now: Instant, waited: u64) {
        let elapsed = now.duration_since(self.window_start.get()).as_nanos() as u64;
        let waited_here = waited.saturating_sub(self.waited_at_start.get());
        let saw_backoff = self.saw_backoff.replace(false) || shared.backed_off_at(now);
        self.window_start.set(now);
        self.waited_at_start.set(waited);
        if saw_backoff || elapsed == 0 {
            self.contended.set(0);
            return;
        }
        let per_mille = waited_here.saturating_mul(1000) / elapsed;
        log::trace!(
            "spin window: waited {per_mille} per mille of {} us",
            elapsed / 1000
        );
        if per_mille < limits::SPIN_WAIT_PER_MILLE_TO_BACK_OFF {
            self.contended.set(0);
        } else {
            self.contended.set(self.contended.get() + 1);
        }
        if self.contended.get() >= limits::SPIN_CONTENDED_WINDOWS {
            self.contended.set(0);
            let backoff = self.backoff.get();
            shared.back_off(now + backoff);
            let n = shared.backoffs();
            if n.is_power_of_two() {
                log::info!(
                    "a shard waited for a core {:.1}% of {} ms while shards were spinning: the \
                     cores are shared; every shard parks when idle for {} ms ({n} backoffs so \
                     far; --dedicated-cores keeps spinning)",
                    per_mille as f64 / 10.0,
                    elapsed / 1_000_000,
                    backoff.as_millis()
                );
            }
            let max = Duration::from_millis(limits::SPIN_BACKOFF_MAX_MS);
            self.backoff.set((backoff * 2).min(max));
        } else if waited_here == 0 {
            self.backoff
                .set(Duration::from_millis(limits::SPIN_BACKOFF_MIN_MS));
        }
    }

    /// Nanoseconds this thread has spent runnable but waiting for a core (0 where the kernel
    /// does not say: then the shard never backs off).
    fn waited_ns(&self) -> u64 {
        let Some(f) = &self.sched else { return 0 };
        let mut buf = [0u8; 96];
        let Ok(n) = f.read_at(&mut buf, 0) else {
            return 0;
        };
        parse_wait(&buf[..n]).unwrap_or(0)
    }
}

/// A shard thread's two affinities: its own core, and all of kelp's cores.
struct Placement {
    home: libc::cpu_set_t,
    wide: libc::cpu_set_t,
    is_wide: Cell<bool>,
}

impl Placement {
    /// None when there is nothing to widen (one core, or the thread is not pinned to one).
    /// `cores`: the cores kelp was told to use, or None for those it was started on (the main
    /// thread's affinity: a `taskset` around kelp is kept).
    fn new(cores: Option<&[usize]>) -> Option<Placement> {
        let home = affinity(0)?;
        let wide = match cores {
            Some(list) => {
                // SAFETY: cpu_set_t is a plain bit array; zeroed is the empty set.
                let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                for &c in list.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
                    // SAFETY: c is within the set's size, filtered above.
                    unsafe { libc::CPU_SET(c, &mut set) };
                }
                set
            }
            // SAFETY: getpid has no preconditions; the process id is the main thread's id.
            None => affinity(unsafe { libc::getpid() })?,
        };
        // SAFETY: CPU_COUNT reads sets we own.
        let (pinned, room) = unsafe { (libc::CPU_COUNT(&home), libc::CPU_COUNT(&wide)) };
        if pinned != 1 || room < 2 {
            log::debug!("shard affinity left alone ({pinned} cores now, {room} to widen to)");
            return None;
        }
        Some(Placement {
            home,
            wide,
            is_wide: Cell::new(false),
        })
    }

    /// Widens the thread's affinity while backed off, narrows it back to its core after.
    fn follow(&self, backed_off: bool) {
        if backed_off == self.is_wide.get() {
            return;
        }
        let set = if backed_off { &self.wide } else { &self.home };
        // SAFETY: reads one cpu_set_t we own; applies to the calling thread (the shard's).
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
        if rc == 0 {
            log::trace!("shard affinity widened: {backed_off}");
            self.is_wide.set(backed_off);
        } else {
            log::warn!(
                "cannot change a shard's CPU affinity: {}",
                std::io::Error::last_os_error()
            );
            // Not retried for this state: the next change of state tries again.
            self.is_wide.set(backed_off);
        }
    }
}

/// The affinity of thread `tid` (0: the calling thread).
fn affinity(tid: libc::pid_t) -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is a plain bit array; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: writes one cpu_set_t we own.
    (unsafe { libc::sched_getaffinity(tid, size, &mut set) } == 0).then_some(set)
}

/// The second field of a schedstat line: "<on-cpu ns> <waiting ns> <timeslices>".
fn parse_wait(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPIN: Duration = Duration::from_micros(50);
    const MS: u64 = 1_000_000;

    /// Ends windows until the shard backs off, as consecutive contended windows do.
    fn contended(g: &SpinGovernor, shared: &SharedSpin, waited_ms: u64) {
        for _ in 0..limits::SPIN_CONTENDED_WINDOWS {
            window_with(g, shared, 20, waited_ms);
        }
    }

    /// Ends a window of `elapsed_ms` in which the shard waited `waited_ms` for a core.
    fn window_with(g: &SpinGovernor, shared: &SharedSpin, elapsed_ms: u64, waited_ms: u64) {
        let _ = g.window(shared);
        let now = Instant::now();
        g.window_start.set(now - Duration::from_millis(elapsed_ms));
        let start = g.waited_at_start.get();
        g.judge(shared, now, start + waited_ms * MS);
    }

    fn adaptive() -> (SpinGovernor, SharedSpin) {
        (SpinGovernor::new(SPIN, false, None), SharedSpin::default())
    }

    #[test]
    fn waiting_for_a_core_backs_every_shard_off_and_the_backoff_doubles() {
        let (g, shared) = adaptive();
        let other = SpinGovernor::new(SPIN, false, None);
        // One contended window is not enough (a noisy neighbour for a moment).
        window_with(&g, &shared, 20, 10);
        assert!(!shared.backed_off());
        window_with(&g, &shared, 20, 10);
        assert!(shared.backed_off());
        assert_eq!(g.window(&shared), Duration::ZERO);
        assert_eq!(
            other.window(&shared),
            Duration::ZERO,
            "the backoff is process-wide"
        );
        assert_eq!(shared.backoffs(), 1);
        let min = Duration::from_millis(limits::SPIN_BACKOFF_MIN_MS);
        assert_eq!(g.backoff.get(), 2 * min);
        // A window during a backoff is not judged.
        window_with(&g, &shared, 20, 20);
        assert_eq!(shared.backoffs(), 1);
        // When it ends, spinning resumes; contended again, the backoff is longer.
        shared.until_ns.store(0, Ordering::Relaxed);
        assert_eq!(g.window(&shared), SPIN);
        contended(&g, &shared, 20);
        assert_eq!(shared.backoffs(), 2);
        assert_eq!(g.backoff.get(), 4 * min);
        // A window without any waiting resets it.
        shared.until_ns.store(0, Ordering::Relaxed);
        window_with(&g, &shared, 20, 0);
        assert!(!shared.backed_off());
        assert_eq!(g.backoff.get(), min);
    }

    #[test]
    fn the_backoff_is_capped() {
        let (g, shared) = adaptive();
        for _ in 0..64 {
            shared.until_ns.store(0, Ordering::Relaxed);
            contended(&g, &shared, 20);
        }
        let max = Duration::from_millis(limits::SPIN_BACKOFF_MAX_MS);
        assert_eq!(g.backoff.get(), max);
    }

    #[test]
    fn a_little_waiting_is_not_a_shared_core() {
        let (g, shared) = adaptive();
        // Under the threshold: a kernel thread that ran for a moment.
        let ms = limits::SPIN_WAIT_PER_MILLE_TO_BACK_OFF - 1;
        for _ in 0..10 {
            window_with(&g, &shared, 1000, ms);
        }
        assert!(!shared.backed_off());
        // A contended window between calm ones starts the count again.
        window_with(&g, &shared, 20, 20);
        window_with(&g, &shared, 20, 0);
        window_with(&g, &shared, 20, 20);
        assert!(!shared.backed_off());
    }

    #[test]
    fn dedicated_cores_and_zero_spin_never_back_off() {
        for g in [
            SpinGovernor::new(SPIN, true, None),
            SpinGovernor::new(Duration::ZERO, false, None),
        ] {
            let shared = SharedSpin::default();
            shared.back_off(Instant::now() + Duration::from_secs(60));
            assert_eq!(g.window(&shared), g.configured);
            assert!(!g.sample(&shared));
        }
    }

    #[test]
    fn a_backed_off_shard_may_run_on_any_of_kelps_cores_then_goes_home() {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            eprintln!("skipped: needs two cores to widen a shard's affinity to");
            return;
        }
        let cores: Vec<usize> = (0..2).collect();
        // Pinned to core 0 as glommio pins a shard, on a thread of its own.
        std::thread::spawn(move || {
            let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            unsafe { libc::CPU_SET(0, &mut one) };
            let size = std::mem::size_of::<libc::cpu_set_t>();
            assert_eq!(unsafe { libc::sched_setaffinity(0, size, &one) }, 0);
            let p = Placement::new(Some(&cores)).expect("a pinned thread with two cores to use");
            let count = || {
                let mut now: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                assert_eq!(unsafe { libc::sched_getaffinity(0, size, &mut now) }, 0);
                unsafe { libc::CPU_COUNT(&now) }
            };
            p.follow(true);
            assert_eq!(count(), 2);
            p.follow(false);
            assert_eq!(count(), 1);
        })
        .join()
        .unwrap();
        // One core to widen to: nothing to do.
        std::thread::spawn(|| {
            let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            unsafe { libc::CPU_SET(0, &mut one) };
            let size = std::mem::size_of::<libc::cpu_set_t>();
            assert_eq!(unsafe { libc::sched_setaffinity(0, size, &one) }, 0);
            assert!(Placement::new(Some(&[0])).is_none());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn schedstat_is_parsed_and_readable_here() {
        assert_eq!(parse_wait(b"1154628 4321 17\n"), Some(4321));
        assert_eq!(parse_wait(b"garbage"), None);
        assert_eq!(parse_wait(b""), None);
        // On these machines the kernel exposes it (a missing file only disables the backoff).
        let g = SpinGovernor::new(SPIN, false, None);
        assert!(g.sched.is_some(), "/proc/thread-self/schedstat is missing");
        let a = g.waited_ns();
        std::thread::yield_now();
        assert!(g.waited_ns() >= a);
    }
}
