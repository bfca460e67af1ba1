//! Locks that survive a panic elsewhere. A std `Mutex` is poisoned when a thread panics
//! while holding it; everything Jewel keeps behind one is updated in whole steps (a map's
//! insert or remove, a counter), so what a panicking holder left is consistent, and
//! skipping the update instead (as `lock().ok()` does) would leave worse: a repair marked
//! busy forever, a health record that never changes. So every lock is taken with
//! [`Locked::locked`], which recovers the guard from a poisoned lock.

/// A lock taken whatever a panicking holder left (see the module's note).
pub trait Locked<T: ?Sized> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T>;
}

impl<T: ?Sized> Locked<T> for std::sync::Mutex<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T> {
        self.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_taken_with_what_its_holder_left() {
        let m = std::sync::Arc::new(std::sync::Mutex::new(vec![1]));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let mut v = held.locked();
            v.push(2);
            panic!("a holder panics");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*m.locked(), [1, 2]);
    }
}
