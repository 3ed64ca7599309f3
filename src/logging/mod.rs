//! Log output: tracing, JSON lines by default; pingora's `log` records are bridged in.
//!
//! Every line (tracing's and the hand-written audit lines, see [`audit`]) is appended
//! to one shared buffer under a mutex and written to stdout by a flusher thread, in batches:
//! the first line into an empty buffer wakes the flusher, which lingers [`LINGER`] for more
//! (at once for warnings and errors, early when [`FLUSH_AT`] bytes are waiting) and writes
//! them with one write(2). Per line that costs a short uncontended lock and a copy; an idle
//! flusher sleeps without waking.
//! (tracing-appender, used before, sent each line through a channel as its own allocation, and
//! its worker thread spun on `sched_yield` waiting for the next: ~0.7 yields and ~0.5 extra
//! write(2) per request, measured with `strace -c`.) Nothing is dropped: beyond
//! [`MAX_PENDING`] bytes a writer waits for the flusher, as a blocking write to stdout would.

pub mod audit;

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// How long the flusher waits for more lines after the first one of a batch.
pub const LINGER: Duration = Duration::from_millis(10);
/// Waiting bytes that make the flusher write before the interval is over.
pub const FLUSH_AT: usize = 64 * 1024;
/// Waiting bytes beyond which writers wait for the flusher (stdout is not keeping up).
pub const MAX_PENDING: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    urgent: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The flusher waits on it.
    wake: Condvar,
    /// Writers wait on it while more than `MAX_PENDING` bytes are waiting.
    drained: Condvar,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A handle on the log buffer; clones share it.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

impl LogWriter {
    /// Appends whole lines. `urgent` has them written at once.
    pub fn append(&self, lines: &[u8], urgent: bool) {
        let mut st = lock(&self.shared.state);
        while st.buf.len() >= MAX_PENDING && !st.stop {
            st = self
                .shared
                .drained
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if st.buf.len() >= MAX_PENDING {
            // Stopped (or never started) with nothing left to drain it: drop, don't grow.
            return;
        }
        let before = st.buf.len();
        st.buf.extend_from_slice(lines);
        let wake = urgent || before == 0 || (before < FLUSH_AT && st.buf.len() >= FLUSH_AT);
        st.urgent |= urgent;
        drop(st);
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

/// What tracing writes one event through.
pub struct EventWriter<'a> {
    writer: &'a LogWriter,
    urgent: bool,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.append(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            writer: self,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        EventWriter {
            writer: self,
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

/// Writes what is left and stops the flusher when dropped.
pub struct LogGuard {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_one();
        self.shared.drained.notify_all();
        if let Some(t) = self.flusher.take() {
            let _ = t.join();
        }
    }
}

/// A log buffer whose flusher thread writes to `out`, lingering `linger` after the first line
/// of a batch.
pub fn buffered(mut out: impl Write + Send + 'static, linger: Duration) -> (LogWriter, LogGuard) {
    let shared = Arc::new(Shared::default());
    let flusher = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("tollgate-log".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(FLUSH_AT);
                loop {
                    let mut st = lock(&shared.state);
                    while st.buf.is_empty() && !st.stop {
                        st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
                    }
                    if !st.stop && !st.urgent && st.buf.len() < FLUSH_AT {
                        st = shared
                            .wake
                            .wait_timeout(st, linger)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                    st.urgent = false;
                    let stop = st.stop;
                    std::mem::swap(&mut st.buf, &mut batch);
                    drop(st);
                    shared.drained.notify_all();
                    if !batch.is_empty() {
                        // Nowhere to report a failing stdout; the lines are dropped then.
                        let _ = out.write_all(&batch).and_then(|()| out.flush());
                        batch.clear();
                        if batch.capacity() > 4 * FLUSH_AT {
                            batch.shrink_to(FLUSH_AT);
                        }
                    }
                    if stop {
                        break;
                    }
                }
            })
    };
    let flusher = match flusher {
        Ok(t) => Some(t),
        Err(e) => {
            // Nothing would ever drain the buffer: keep writers from waiting on it.
            eprintln!("cannot start the log writer thread: {e}; log lines are dropped");
            lock(&shared.state).stop = true;
            None
        }
    };
    (
        LogWriter {
            shared: shared.clone(),
        },
        LogGuard { shared, flusher },
    )
}

/// pingora's records at debug and trace quote request heads (a head that fails to parse is
/// logged whole, `Authorization` included): at those levels pingora's crates stay at `info`,
/// unless the level names them itself (an explicit `pingora_core=debug` is the operator's call).
fn with_pingora_capped(filter: EnvFilter, level: &str) -> EnvFilter {
    let verbose = filter
        .max_level_hint()
        .is_some_and(|max| max > tracing::level_filters::LevelFilter::INFO);
    if !verbose || level.contains("pingora") {
        return filter;
    }
    ["pingora_core=info", "pingora_proxy=info", "pingora=info"]
        .into_iter()
        .filter_map(|d| d.parse().ok())
        .fold(filter, EnvFilter::add_directive)
}

/// Installs the global subscriber (once; later calls are ignored). Keep the returned guard
/// alive until exit: dropping it writes the last lines.
pub fn init(config: &LogConfig) -> LogGuard {
    let filter = with_pingora_capped(
        EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info")),
        &config.level,
    );
    let (writer, guard) = buffered(std::io::stdout(), LINGER);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone());
    let _ = match config.format {
        LogFormat::Json => {
            audit::install(writer);
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .try_init()
        }
        LogFormat::Text => builder.try_init(),
    };
    guard
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` that records each write call.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    #[test]
    fn lines_arrive_in_order_in_batches_and_all_at_drop() {
        let sink = Sink::default();
        let (w, guard) = buffered(sink.clone(), LINGER);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        w.append(format!("t{t} line {i}\n").as_bytes(), false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        w.append(b"last\n", false);
        drop(guard);
        let text = sink.text();
        assert_eq!(text.lines().count(), 4001);
        assert!(text.ends_with("last\n"));
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("t{t} line ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..1000).collect::<Vec<_>>(), "thread {t} in order");
        }
        assert!(
            sink.writes() < 100,
            "{} writes for 4001 lines",
            sink.writes()
        );
    }

    #[test]
    fn info_lines_linger_and_urgent_lines_do_not() {
        let sink = Sink::default();
        // A linger far longer than the test: only an urgent line can end it early.
        let (w, guard) = buffered(sink.clone(), Duration::from_secs(60));
        w.append(b"info\n", false);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(sink.text(), "", "an info line is held for the linger");
        w.append(b"error\n", true);
        let start = std::time::Instant::now();
        while !sink.text().contains("error\n") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "urgent line not written"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(sink.text(), "info\nerror\n", "in order, in one batch");
        assert_eq!(sink.writes(), 1);
        // Dropping the guard writes what is left without waiting for the linger.
        w.append(b"last\n", false);
        let start = std::time::Instant::now();
        drop(guard);
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(sink.text().ends_with("last\n"));
    }

    #[test]
    fn a_stalled_output_holds_writers_back_without_losing_lines() {
        struct Slow(Sink);
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(20));
                self.0.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let (w, guard) = buffered(Slow(sink.clone()), LINGER);
        let line = vec![b'x'; 1023];
        let total = 3 * MAX_PENDING / 1024;
        for _ in 0..total {
            w.append(&[&line[..], b"\n"].concat(), false);
            assert!(lock(&w.shared.state).buf.len() <= MAX_PENDING + 1024);
        }
        drop(guard);
        assert_eq!(sink.text().lines().count(), total);
    }
}
