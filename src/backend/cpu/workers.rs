//! Keeping the rayon workers awake through a loop of short parallel ops.
//!
//! A training step on the CPU is a chain of parallel ops tens of microseconds long. Between
//! two of them rayon's idle workers go to sleep, and the next op pays a wake-up (a futex
//! call and a context switch) before the other cores help. [`with_spinning_workers`]
//! keeps every other worker polling for jobs while a closure runs, as OpenMP runtimes do
//! between parallel regions; the cores it spins on are the ones the ops run on.

use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `f` on a rayon worker while the pool's other workers poll for jobs (running any
/// they find) instead of sleeping; they go back to rayon's usual idling when `f` returns.
///
/// For loops of many short parallel ops on the CPU (a training step on a few cores: the
/// quickstart step ran 1.25x faster on 2 cores); it costs the other workers' cores for
/// the whole of `f`, so use it where `f` keeps them busy. A one-thread pool runs `f`
/// alone.
pub fn with_spinning_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    in_pool(true, f)
}

/// Runs `f` on a rayon worker (parallel ops then start on this thread instead of waking
/// the pool and blocking), with the other workers spinning while it runs when `spin`.
pub(crate) fn in_pool<R: Send>(spin: bool, f: impl FnOnce() -> R + Send) -> R {
    let stop = AtomicBool::new(false);
    rayon::scope(|s| {
        let home = rayon::current_thread_index();
        let spinners = if spin {
            rayon::current_num_threads() - 1
        } else {
            0
        };
        for _ in 0..spinners {
            let stop = &stop;
            s.spawn(move |_| {
                // The thread running `f` may pop a spinner of its own queue while it
                // waits inside `f`: it must not spin there (`f` would never finish).
                if rayon::current_thread_index() == home {
                    return;
                }
                while !stop.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        // Stop the spinners however `f` ends, a panic included (the scope waits for them).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _stop = Stop(&stop);
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// Parallel sums (with nested joins) inside a spinning pool of `threads`.
    fn sums_in_pool(threads: usize) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let got = pool.install(|| {
            with_spinning_workers(|| {
                (0..200u64)
                    .map(|i| {
                        let (a, b) = rayon::join(
                            || (0..1000 * i).into_par_iter().sum::<u64>(),
                            || (0..i).into_par_iter().map(|x| x * x).sum::<u64>(),
                        );
                        a + b
                    })
                    .sum::<u64>()
            })
        });
        let want: u64 = (0..200u64)
            .map(|i| (0..1000 * i).sum::<u64>() + (0..i).map(|x| x * x).sum::<u64>())
            .sum();
        assert_eq!(got, want);
    }

    #[test]
    fn parallel_work_inside_gives_its_results_on_any_pool_size() {
        for threads in [1, 2, 3] {
            sums_in_pool(threads);
        }
    }

    #[test]
    fn called_on_a_worker_or_twice_in_a_row_it_still_finishes() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let v = pool.install(|| {
            let a = with_spinning_workers(|| 1 + with_spinning_workers(|| 2));
            a + in_pool(false, || 3)
        });
        assert_eq!(v, 6);
    }

    #[test]
    fn a_panic_inside_stops_the_spinners_and_reaches_the_caller() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| with_spinning_workers(|| panic!("inside")))
        }));
        assert!(r.is_err());
        // The pool is usable again: no spinner was left running.
        assert_eq!(pool.install(|| with_spinning_workers(|| 7)), 7);
    }
}
