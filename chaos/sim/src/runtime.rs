//! [`SimRuntime`]: the async runtime openraft runs on in the simulation — tokio, with two
//! sources of chance taken out:
//! - `thread_rng` (election timeouts, tick jitter) is openraft's [`DeterministicRng`]: seeded per
//!   task from the run's seed;
//! - watch channels are [`SimWatch`], not tokio's: a tokio receiver waits on one of eight
//!   `Notify`s picked by the runtime's own random generator (which only an unstable tokio build
//!   can seed), so the order in which a change wakes openraft's tasks — e.g. which follower the
//!   leader replicates to first — differed from run to run. `SimWatch` has one `Notify`, whose
//!   waiters wake in the order they began to wait.
//!
//! Everything else is tokio as in production (`TokioRuntime`).

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use openraft_rt::deterministic_rng::DeterministicRng;
use openraft_rt::watch::{RecvError, SendError, Watch, WatchReceiver, WatchSender};
use openraft_rt::{AsyncRuntime, OptionalSend, OptionalSync, Select2, Select3, Select4};
use openraft_rt_tokio::TokioRuntime;

type Inner = DeterministicRng<TokioRuntime>;

#[derive(Debug)]
pub struct SimRuntime {
    inner: Inner,
}

impl SimRuntime {
    /// Runs `future` with `seed` as the root of every task's RNG seed.
    pub fn scope<F: Future>(seed: u64, future: F) -> impl Future<Output = F::Output> {
        Inner::scope(seed, future)
    }
}

impl AsyncRuntime for SimRuntime {
    type JoinError = <Inner as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Inner as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Inner as AsyncRuntime>::Sleep;
    type Instant = <Inner as AsyncRuntime>::Instant;
    type TimeoutError = <Inner as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Inner as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = <Inner as AsyncRuntime>::ThreadLocalRng;
    type Mpsc = <Inner as AsyncRuntime>::Mpsc;
    type Watch = SimWatch;
    type Oneshot = <Inner as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <Inner as AsyncRuntime>::Mutex<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Inner::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Inner::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Inner::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        Inner::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        Inner::timeout_at(deadline, future)
    }

    fn select2<A, B>(a: A, b: B) -> impl Future<Output = Select2<A::Output, B::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
    {
        Inner::select2(a, b)
    }

    fn select3<A, B, C>(
        a: A,
        b: B,
        c: C,
    ) -> impl Future<Output = Select3<A::Output, B::Output, C::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
        C: Future + OptionalSend,
    {
        Inner::select3(a, b, c)
    }

    fn select4<A, B, C, D>(
        a: A,
        b: B,
        c: C,
        d: D,
    ) -> impl Future<Output = Select4<A::Output, B::Output, C::Output, D::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
        C: Future + OptionalSend,
        D: Future + OptionalSend,
    {
        Inner::select4(a, b, c, d)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Inner::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        Inner::thread_rng()
    }

    fn new(threads: usize) -> Self {
        SimRuntime { inner: Inner::new(threads) }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.inner.block_on(future)
    }

    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Inner::spawn_blocking(f)
    }
}

/// A watch channel whose receivers wake in the order they started waiting.
#[derive(Debug)]
pub struct SimWatch;

#[derive(Debug)]
struct Shared<T> {
    value: RwLock<T>,
    /// Bumped by every change; a receiver has seen the version it last marked.
    version: AtomicU64,
    senders: AtomicUsize,
    receivers: AtomicUsize,
    closed: AtomicBool,
    changed: tokio::sync::Notify,
}

impl<T> Shared<T> {
    fn read(&self) -> RwLockReadGuard<'_, T> {
        self.value.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
pub struct SimWatchSender<T> {
    shared: Arc<Shared<T>>,
}

#[derive(Debug)]
pub struct SimWatchReceiver<T> {
    shared: Arc<Shared<T>>,
    seen: u64,
}

impl<T> Clone for SimWatchSender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::SeqCst);
        SimWatchSender { shared: self.shared.clone() }
    }
}

impl<T> Drop for SimWatchSender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.closed.store(true, Ordering::SeqCst);
            self.shared.changed.notify_waiters();
        }
    }
}

impl<T> Clone for SimWatchReceiver<T> {
    fn clone(&self) -> Self {
        self.shared.receivers.fetch_add(1, Ordering::SeqCst);
        SimWatchReceiver { shared: self.shared.clone(), seen: self.seen }
    }
}

impl<T> Drop for SimWatchReceiver<T> {
    fn drop(&mut self) {
        self.shared.receivers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Watch for SimWatch {
    type Sender<T: OptionalSend + OptionalSync> = SimWatchSender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = SimWatchReceiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = RwLockReadGuard<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (Self::Sender<T>, Self::Receiver<T>) {
        let shared = Arc::new(Shared {
            value: RwLock::new(init),
            version: AtomicU64::new(0),
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
            closed: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        });
        (SimWatchSender { shared: shared.clone() }, SimWatchReceiver { shared, seen: 0 })
    }
}

impl<T: OptionalSend + OptionalSync> WatchSender<SimWatch, T> for SimWatchSender<T> {
    /// As tokio's: refused (and the value dropped) when no receiver is left.
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.shared.receivers.load(Ordering::SeqCst) == 0 {
            return Err(SendError(value));
        }
        let mut value = Some(value);
        self.send_if_modified(|current| {
            if let Some(v) = value.take() {
                *current = v;
            }
            true
        });
        Ok(())
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        let modified = {
            let mut current = self.shared.value.write().unwrap_or_else(PoisonError::into_inner);
            modify(&mut current)
        };
        if modified {
            self.shared.version.fetch_add(1, Ordering::SeqCst);
            self.shared.changed.notify_waiters();
        }
        modified
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.shared.read()
    }

    fn subscribe(&self) -> SimWatchReceiver<T> {
        self.shared.receivers.fetch_add(1, Ordering::SeqCst);
        SimWatchReceiver { shared: self.shared.clone(), seen: self.shared.version.load(Ordering::SeqCst) }
    }
}

impl<T: OptionalSend + OptionalSync> WatchReceiver<SimWatch, T> for SimWatchReceiver<T> {
    async fn changed(&mut self) -> Result<(), RecvError> {
        loop {
            let notified = self.shared.changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before looking, so a change between the look and the wait is not missed.
            notified.as_mut().enable();
            let version = self.shared.version.load(Ordering::SeqCst);
            if version != self.seen {
                self.seen = version;
                return Ok(());
            }
            if self.shared.closed.load(Ordering::SeqCst) {
                return Err(RecvError(()));
            }
            notified.await;
        }
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.shared.read()
    }

    fn borrow_and_update(&mut self) -> RwLockReadGuard<'_, T> {
        self.seen = self.shared.version.load(Ordering::SeqCst);
        self.shared.read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_see_each_change_once_and_learn_when_the_sender_is_gone() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build();
        rt.expect("a runtime").block_on(async {
            let (tx, mut rx) = SimWatch::channel(1_u32);
            let mut late = tx.subscribe();
            tx.send(2).expect("a receiver is there");
            rx.changed().await.expect("a change");
            assert_eq!(*rx.borrow_watched(), 2);
            assert!(!tx.send_if_modified(|v| std::mem::replace(v, 2) != 2));
            assert_eq!(*late.borrow_and_update(), 2);
            let waiting = tokio::spawn(async move { late.changed().await });
            tokio::task::yield_now().await;
            assert!(tx.send_if_different(3));
            assert_eq!(waiting.await.expect("the waiting task"), Ok(()));
            drop(tx);
            rx.changed().await.expect("the unseen 3");
            assert_eq!(rx.changed().await, Err(RecvError(())));
        });
    }
}
