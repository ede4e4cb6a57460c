//! Progress bars on a terminal, and off one (cron, a scheduler's log) a timestamped line
//! every so often: the binary's side of [`campaign::progress`] events.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use campaign::exit::Error;
use campaign::progress::{Event, Progress};
use campaign::run::{OpenedRun, Selection};
use campaign::send::{self, SegmentStatus};

/// The look of every progress bar (`template` in indicatif's syntax).
pub(super) fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// An overall bar and, for a send, one per selected segment (indexed like the manifest's
/// segments); nothing off a terminal or when `shown` is false.
pub(super) struct Bars {
    overall: Option<ProgressBar>,
    segments: Vec<Option<ProgressBar>>,
    lines: Option<Lines>,
}

/// Off a terminal: a line on stderr every `every`, so a long send's log shows it is alive.
struct Lines {
    started: Instant,
    every: Duration,
    /// Donors in the selection, and done before this process started.
    total: u64,
    state: Mutex<(u64, Instant)>,
}

impl Lines {
    fn handled(&self, donors: u64) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        st.0 += donors;
        if st.1.elapsed() < self.every {
            return;
        }
        st.1 = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "campaign: {:.0}: {} of {} donors done, {:.0}/s in this run",
            jiff::Timestamp::now(),
            st.0,
            self.total,
            st.0 as f64 / secs
        );
    }
}

impl Bars {
    fn hidden() -> Bars {
        Bars {
            overall: None,
            segments: Vec::new(),
            lines: None,
        }
    }

    /// One bar of `len` items.
    pub(super) fn single(shown: bool, len: u64, template: &str) -> Bars {
        if !(shown && std::io::stderr().is_terminal()) {
            return Bars::hidden();
        }
        let pb = ProgressBar::new(len);
        pb.set_style(bar_style(template));
        Bars {
            overall: Some(pb),
            segments: Vec::new(),
            lines: None,
        }
    }

    /// An overall bar and one per selected segment, starting from what earlier runs did.
    ///
    /// Off a terminal, a line every `every` instead (none when `shown` is false).
    pub(super) fn per_segment(
        shown: bool,
        every: Duration,
        run: &OpenedRun,
        selection: &Selection,
    ) -> Result<Bars, Error> {
        if !shown {
            return Ok(Bars::hidden());
        }
        let status = send::status(run.dir(), &run.manifest, selection)?;
        let done = |s: &SegmentStatus| s.sent + s.failed + s.unknown + s.suppressed;
        if !std::io::stderr().is_terminal() {
            let mut bars = Bars::hidden();
            bars.lines = Some(Lines {
                started: Instant::now(),
                every,
                total: status.iter().map(|s| s.donors).sum(),
                state: Mutex::new((status.iter().map(done).sum(), Instant::now())),
            });
            return Ok(bars);
        }
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(status.iter().map(|s| s.donors).sum()));
        overall.set_style(bar_style(
            "{prefix:>12} [{bar:30}] {pos}/{len} donors, {per_sec}, eta {eta}",
        ));
        overall.set_prefix("all");
        overall.set_position(status.iter().map(done).sum());
        let mut segments = vec![None; run.manifest.segments.len()];
        for (&i, s) in selection.indexes().iter().zip(&status) {
            let pb = multi.add(ProgressBar::new(s.donors));
            pb.set_style(bar_style("{prefix:>12} [{bar:30}] {pos}/{len}"));
            pb.set_prefix(s.segment.clone());
            pb.set_position(done(s));
            segments[i] = Some(pb);
        }
        Ok(Bars {
            overall: Some(overall),
            segments,
            lines: None,
        })
    }

    /// Clears the bars from the terminal.
    pub(super) fn finish(&self) {
        for pb in self.overall.iter().chain(self.segments.iter().flatten()) {
            pb.finish_and_clear();
        }
    }
}

impl Progress for Bars {
    fn event(&self, event: Event) {
        match event {
            Event::Handled { segment, donors } => {
                if let Some(l) = &self.lines {
                    l.handled(donors);
                }
                if let Some(pb) = &self.overall {
                    pb.inc(donors);
                }
                if let Some(Some(pb)) = self.segments.get(segment) {
                    pb.inc(donors);
                }
            }
            Event::Read { bytes } => {
                if let Some(pb) = &self.overall {
                    pb.set_position(bytes);
                }
            }
        }
    }
}
