//! A small bounded pool of reusable buffers, so the pipelines do not allocate (and
//! page-fault in) fresh multi-megabyte buffers for every segment. A std `Mutex` is fine:
//! it is held only to push or pop.

use crate::sync::Locked;
use std::sync::Mutex;

pub struct Pool<T> {
    items: Mutex<Vec<T>>,
    max: usize,
}

impl<T: Default> Pool<T> {
    pub fn new(max: usize) -> Self {
        Pool { items: Mutex::new(Vec::new()), max }
    }

    /// A pooled item, or a new one.
    pub fn take(&self) -> T {
        self.items.locked().pop().unwrap_or_default()
    }

    /// Returns an item; beyond `max` pooled items it is dropped.
    pub fn give(&self, item: T) {
        let mut v = self.items.locked();
        if v.len() < self.max {
            v.push(item);
        }
    }
}
