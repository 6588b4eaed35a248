// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! The bounded pipe between a request's downstream and upstream halves.
//!
//! Each proxied request holds two of these for its whole life (an open stream for hours),
//! each with room for `TASK_BUFFER_SIZE` (4) tasks. `tokio::sync::mpsc` allocates its first
//! block of 32 slots and a channel padded to cache lines when it is created: about 1.8 KB a
//! pipe. This one is a small locked queue that allocates its four slots when the first task
//! is sent. It has the part of `mpsc`'s API the proxy uses, with the same semantics: one
//! sender (not `Clone`), `reserve` hands out a permit for one slot, `recv` returns `None` once
//! the sender is gone and the queue is empty, and a dropped receiver fails every later send.
//! The errors are tokio's, so callers handle them as before.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

pub use tokio::sync::mpsc::error::{SendError, TryRecvError, TrySendError};

struct State<T> {
    queue: VecDeque<T>,
    /// Slots handed out as permits and not yet used.
    reserved: usize,
    cap: usize,
    /// The receiver waiting for a task or for the sender to go.
    rx_waker: Option<Waker>,
    /// The sender waiting for a slot.
    tx_waker: Option<Waker>,
    rx_closed: bool,
    tx_closed: bool,
}

impl<T> State<T> {
    fn has_room(&self) -> bool {
        self.queue.len() + self.reserved < self.cap
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The lock is never held across user code that can panic (only queue and flag
        // updates), so a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Registers `waker` in `slot`. A different waker already there is handed back so that the
/// caller wakes it after unlocking: its owner then polls again and registers itself, and no
/// wake-up is lost if two tasks wait on the same side.
fn register(slot: &mut Option<Waker>, waker: &Waker) -> Option<Waker> {
    match slot {
        Some(w) if w.will_wake(waker) => None,
        _ => slot.replace(waker.clone()),
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        w.wake();
    }
}

/// A pipe with room for `cap` tasks (at least one).
pub fn channel<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            reserved: 0,
            cap: cap.max(1),
            rx_waker: None,
            tx_waker: None,
            rx_closed: false,
            tx_closed: false,
        }),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// One reserved slot: `send` fills it without waiting; dropped unused, the slot is free again.
pub struct Permit<'a, T> {
    sender: &'a Sender<T>,
    used: bool,
}

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    fn poll_reserve(&self, cx: &mut Context<'_>) -> Poll<Result<Permit<'_, T>, SendError<()>>> {
        let mut s = self.shared.lock();
        if s.rx_closed {
            return Poll::Ready(Err(SendError(())));
        }
        if s.has_room() {
            s.reserved += 1;
            // This task waits no more; another task's waker stays to be woken.
            let mine = s.tx_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
            let stale = if mine { s.tx_waker.take() } else { None };
            drop(s);
            drop(stale);
            return Poll::Ready(Ok(Permit {
                sender: self,
                used: false,
            }));
        }
        let displaced = register(&mut s.tx_waker, cx.waker());
        drop(s);
        wake(displaced);
        Poll::Pending
    }

    /// Waits for a free slot and reserves it; fails once the receiver is dropped.
    pub async fn reserve(&self) -> Result<Permit<'_, T>, SendError<()>> {
        poll_fn(|cx| self.poll_reserve(cx)).await
    }

    /// Reserves a free slot without waiting.
    pub fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError<()>> {
        let mut s = self.shared.lock();
        if s.rx_closed {
            return Err(TrySendError::Closed(()));
        }
        if !s.has_room() {
            return Err(TrySendError::Full(()));
        }
        s.reserved += 1;
        Ok(Permit {
            sender: self,
            used: false,
        })
    }

    /// Waits for a free slot and queues `value`; hands it back if the receiver is gone.
    pub async fn send(&self, value: T) -> Result<(), SendError<T>> {
        match self.reserve().await {
            Ok(permit) => {
                permit.send(value);
                Ok(())
            }
            Err(_) => Err(SendError(value)),
        }
    }

    /// Whether the receiver is dropped (no task sent from now on is received).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().rx_closed
    }

    /// Waits until the receiver is dropped.
    pub async fn closed(&self) {
        poll_fn(|cx| {
            let mut s = self.shared.lock();
            if s.rx_closed {
                return Poll::Ready(());
            }
            let displaced = register(&mut s.tx_waker, cx.waker());
            drop(s);
            wake(displaced);
            Poll::Pending
        })
        .await
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.tx_closed = true;
        let rx = s.rx_waker.take();
        drop(s);
        wake(rx);
    }
}

impl<T> Permit<'_, T> {
    /// Queues `value` in the reserved slot. If the receiver is dropped meanwhile, the value
    /// is dropped too, as with tokio's permit.
    pub fn send(mut self, value: T) {
        self.used = true;
        let mut s = self.sender.shared.lock();
        s.reserved -= 1;
        if s.rx_closed {
            drop(s);
            drop(value);
            return;
        }
        s.queue.push_back(value);
        let rx = s.rx_waker.take();
        drop(s);
        wake(rx);
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        if self.used {
            return;
        }
        let mut s = self.sender.shared.lock();
        s.reserved -= 1;
        let tx = s.tx_waker.take();
        drop(s);
        wake(tx);
    }
}

impl<T> std::fmt::Debug for Permit<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl<T> Receiver<T> {
    /// The next task; `None` once the sender is dropped and every queued task received.
    /// Cancel safe: a task is taken only in the poll that returns it.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.shared.lock();
        if let Some(value) = s.queue.pop_front() {
            let tx = s.tx_waker.take();
            drop(s);
            wake(tx);
            return Poll::Ready(Some(value));
        }
        if s.tx_closed {
            return Poll::Ready(None);
        }
        let displaced = register(&mut s.rx_waker, cx.waker());
        drop(s);
        wake(displaced);
        Poll::Pending
    }

    /// The next task if one is queued.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut s = self.shared.lock();
        if let Some(value) = s.queue.pop_front() {
            let tx = s.tx_waker.take();
            drop(s);
            wake(tx);
            return Ok(value);
        }
        if s.tx_closed {
            Err(TryRecvError::Disconnected)
        } else {
            Err(TryRecvError::Empty)
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.rx_closed = true;
        let queued = std::mem::take(&mut s.queue);
        let tx = s.tx_waker.take();
        drop(s);
        // Queued tasks are dropped outside the lock.
        drop(queued);
        wake(tx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    const SHORT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn tasks_arrive_in_order_and_none_after_the_sender_is_gone() {
        let (tx, mut rx) = channel::<u32>(4);
        for i in 0..4 {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        for i in 0..4 {
            assert_eq!(rx.recv().await, Some(i));
        }
        assert_eq!(rx.recv().await, None);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_full_pipe_holds_the_sender_until_a_task_is_received() {
        let (tx, mut rx) = channel::<u32>(2);
        tx.send(1).await.unwrap();
        let permit = tx.reserve().await.unwrap();
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
        assert!(
            timeout(SHORT, tx.send(3)).await.is_err(),
            "sent past capacity"
        );
        permit.send(2);
        let sender = tokio::spawn(async move {
            tx.send(3).await.unwrap();
            tx
        });
        tokio::time::sleep(SHORT).await;
        assert!(!sender.is_finished(), "sent into a full pipe");
        assert_eq!(rx.recv().await, Some(1));
        let tx = timeout(Duration::from_secs(5), sender)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn an_unused_permit_frees_its_slot() {
        let (tx, _rx) = channel::<u32>(1);
        let permit = tx.reserve().await.unwrap();
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
        drop(permit);
        tx.try_reserve().unwrap().send(7);
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_task_and_for_the_sender_going() {
        let (tx, mut rx) = channel::<u32>(4);
        let receiver = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first, second)
        });
        tokio::time::sleep(SHORT).await;
        tx.send(5).await.unwrap();
        tokio::time::sleep(SHORT).await;
        drop(tx);
        let got = timeout(Duration::from_secs(5), receiver)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, (Some(5), None));
    }

    #[tokio::test]
    async fn a_dropped_receiver_fails_sends_and_wakes_a_waiting_sender() {
        let (tx, rx) = channel::<u32>(1);
        tx.send(1).await.unwrap();
        assert!(!tx.is_closed());
        let sender = tokio::spawn(async move {
            let r = tx.send(2).await;
            (r, tx)
        });
        let (tx2, rx2) = channel::<u32>(1);
        let watcher = tokio::spawn(async move {
            tx2.closed().await;
            tx2
        });
        tokio::time::sleep(SHORT).await;
        assert!(!watcher.is_finished(), "closed() before the receiver went");
        drop(rx);
        drop(rx2);
        let (r, tx) = timeout(Duration::from_secs(5), sender)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.unwrap_err().0, 2);
        assert!(tx.is_closed());
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Closed(()))));
        assert!(tx.reserve().await.is_err());
        let tx2 = timeout(Duration::from_secs(5), watcher)
            .await
            .unwrap()
            .unwrap();
        assert!(tx2.is_closed());
    }

    #[tokio::test]
    async fn a_permit_used_after_the_receiver_went_drops_its_value() {
        let (tx, rx) = channel::<Arc<()>>(1);
        let value = Arc::new(());
        let permit = tx.reserve().await.unwrap();
        drop(rx);
        permit.send(value.clone());
        assert_eq!(
            Arc::strong_count(&value),
            1,
            "value kept after the receiver went"
        );
    }

    #[tokio::test]
    async fn try_recv_tells_empty_from_disconnected() {
        let (tx, mut rx) = channel::<u32>(2);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        tx.send(4).await.unwrap();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(4));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[tokio::test]
    async fn queued_tasks_are_dropped_with_the_receiver() {
        let (tx, rx) = channel::<Arc<()>>(2);
        let value = Arc::new(());
        tx.send(value.clone()).await.unwrap();
        drop(rx);
        assert_eq!(Arc::strong_count(&value), 1);
        assert!(tx.is_closed());
    }

    #[tokio::test]
    async fn recv_in_select_loses_no_task() {
        // The proxy polls recv() in select! beside other branches: a cancelled recv takes
        // nothing from the pipe.
        let (tx, mut rx) = channel::<u32>(4);
        let producer = tokio::spawn(async move {
            for i in 0..1000 {
                tx.send(i).await.unwrap();
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut got = Vec::new();
        loop {
            tokio::select! {
                v = rx.recv() => match v {
                    Some(v) => got.push(v),
                    None => break,
                },
                _ = tokio::task::yield_now() => {}
            }
        }
        producer.await.unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn the_pipe_is_small_and_allocates_its_slots_on_first_send() {
        let (tx, rx) = channel::<pingora_core::protocols::http::HttpTask>(4);
        // Arc counts + lock + state: a fraction of tokio's ~1.8 KB (a cache-padded channel
        // and a first block of 32 slots, allocated at creation).
        assert!(std::mem::size_of::<ArcInnerProbe>() <= 128);
        assert_eq!(tx.shared.lock().queue.capacity(), 0);
        drop((tx, rx));
    }

    /// The same layout as the allocation behind `Arc<Shared<HttpTask>>`.
    #[allow(dead_code)]
    struct ArcInnerProbe {
        strong: usize,
        weak: usize,
        shared: Shared<pingora_core::protocols::http::HttpTask>,
    }
}
