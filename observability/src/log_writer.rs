//! The logs' way to stderr: lines are appended to a shared buffer and a thread of their own
//! writes the buffer out in one system call per batch, so a request never waits on stderr.
//!
//! A line is written at most `LINGER` after it was logged. A producer finding the buffer at
//! `CAPACITY` waits for the writer (as a direct write to a slow stderr would), so nothing is
//! dropped. `flush` (called when tracing is shut down and before a panic is reported) writes
//! what is buffered at once.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer gathers lines after the first of a batch.
const LINGER: Duration = Duration::from_millis(10);
/// Bytes buffered at most before producers wait for the writer.
const CAPACITY: usize = 4 << 20;

/// Where the batches go: stderr in the service, a buffer in tests.
type Sink = Box<dyn Write + Send>;

struct Shared {
    pending: Mutex<Vec<u8>>,
    /// Signalled when the buffer gains its first bytes or fills up.
    work: Condvar,
    /// Signalled when the writer emptied the buffer.
    room: Condvar,
    /// Whether the writer thread runs; without it each line is written at once.
    threaded: bool,
    /// Held while a batch is written, so `flush` returns only once everything logged before
    /// it reached the sink, in order.
    sink: Mutex<Sink>,
}

/// A `MakeWriter` for the fmt layer whose writes land in the batch buffer.
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

impl BatchedWriter {
    /// A writer to stderr, through its own thread (or directly if that cannot start).
    pub fn stderr() -> Self {
        Self::start(Box::new(std::io::stderr()))
    }

    fn start(sink: Sink) -> Self {
        let (gate, opened) = std::sync::mpsc::sync_channel::<Arc<Shared>>(1);
        let started = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                if let Ok(shared) = opened.recv() {
                    write_batches(&shared);
                }
            })
            .is_ok();
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::new()),
            work: Condvar::new(),
            room: Condvar::new(),
            threaded: started,
            sink: Mutex::new(sink),
        });
        if started {
            let _ = gate.send(Arc::clone(&shared));
        } else {
            eprintln!("log writer thread did not start; writing log lines one by one");
        }
        Self { shared }
    }

    /// Writes everything buffered now, and waits until it is written.
    pub fn flush(&self) {
        write_pending(&self.shared);
    }

    fn append(&self, line: &[u8]) {
        if !self.shared.threaded {
            lock(&self.shared.pending).extend_from_slice(line);
            return write_pending(&self.shared);
        }
        let mut pending = lock(&self.shared.pending);
        while !pending.is_empty() && pending.len() + line.len() > CAPACITY {
            self.shared.work.notify_one();
            pending = self
                .shared
                .room
                .wait(pending)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let was_empty = pending.is_empty();
        pending.extend_from_slice(line);
        // One wake-up per batch: the writer, once woken, lingers to gather the lines after it.
        if was_empty || pending.len() > CAPACITY / 2 {
            self.shared.work.notify_one();
        }
    }
}

/// The writer thread: waits for a first line, lingers, takes the whole buffer and writes it.
fn write_batches(shared: &Shared) {
    loop {
        {
            let mut pending = lock(&shared.pending);
            while pending.is_empty() {
                pending = shared
                    .work
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if pending.len() <= CAPACITY / 2 {
                // Woken by a full buffer, it does not linger.
                let _ = shared.work.wait_timeout(pending, LINGER);
            }
        }
        write_pending(shared);
    }
}

/// Takes the buffer and writes it. The batch is taken with the sink held, so two writes (the
/// thread's and a `flush`) never pass each other.
fn write_pending(shared: &Shared) {
    let mut sink = lock(&shared.sink);
    let batch = std::mem::take(&mut *lock(&shared.pending));
    shared.room.notify_all();
    if !batch.is_empty() {
        // A closed stderr loses the logs, as a direct write would; it never stops the service.
        let _ = sink.write_all(&batch);
    }
    let _ = sink.flush();
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One event's writer: the fmt layer writes each formatted line with a single `write_all`.
pub struct LineWriter<'a> {
    owner: &'a BatchedWriter,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.owner.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { owner: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read, and wait on until it holds something.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>, Arc<Condvar>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            self.1.notify_all();
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_whole_and_in_order_per_thread() {
        let captured = Captured::default();
        let writer = BatchedWriter::start(Box::new(captured.clone()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        let line = format!("{{\"thread\":{t},\"line\":{i}}}\n");
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        writer.flush();
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let t = value["thread"].as_u64().unwrap() as usize;
            assert_eq!(value["line"].as_u64().unwrap(), next[t], "thread {t}");
            next[t] += 1;
        }
        assert_eq!(next, [2_000; 4]);
    }

    #[test]
    fn a_line_reaches_the_sink_without_a_flush() {
        let captured = Captured::default();
        let writer = BatchedWriter::start(Box::new(captured.clone()));
        writer.make_writer().write_all(b"alone\n").unwrap();
        let written = captured.0.lock().unwrap();
        let (written, waited) = captured
            .1
            .wait_timeout_while(written, Duration::from_secs(5), |w| w.is_empty())
            .unwrap();
        assert!(!waited.timed_out(), "never written");
        assert_eq!(written.as_slice(), b"alone\n");
    }

    #[test]
    fn a_full_buffer_makes_the_producer_wait_instead_of_dropping() {
        let captured = Captured::default();
        let writer = BatchedWriter::start(Box::new(captured.clone()));
        let line = vec![b'x'; 64 << 10];
        // Four times the capacity, from one thread: it must wait for the writer, not drop.
        for _ in 0..(4 * CAPACITY / line.len()) {
            writer.make_writer().write_all(&line).unwrap();
        }
        writer.flush();
        assert_eq!(captured.0.lock().unwrap().len(), 4 * CAPACITY);
    }
}
