//! Progress of long operations on a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// A long operation's progress: a bar with rate and ETA on a terminal, a plain line every
/// five seconds otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    unit: &'static str,
    last_line: std::sync::Mutex<std::time::Instant>,
}

impl Progress {
    /// `label` names the operation ("rebuilding feed"); `unit` what is counted.
    pub fn new(label: &str, unit: &'static str) -> Progress {
        use std::io::IsTerminal;
        // Drawn from the first report on, when the length is known (never `0/0`).
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(&format!(
                "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{rate}} ETA {{eta}}"
            ))
            .expect("a valid template")
            .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", s.per_sec());
            });
            let bar =
                ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()).with_style(style);
            bar.set_message(label.to_owned());
            bar
        });
        Progress {
            bar,
            label: label.to_owned(),
            unit,
            last_line: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    /// `upto` of `last` done.
    pub fn show(&self, upto: i64, last: i64) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(last.max(0) as u64);
                bar.set_position(upto.max(0) as u64);
                if bar.is_hidden() {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                }
            }
            None => {
                let mut at = self.last_line.lock().expect("progress lock");
                if at.elapsed() >= std::time::Duration::from_secs(5) || upto >= last {
                    eprintln!("{}: {upto} of {last} {}", self.label, self.unit);
                    *at = std::time::Instant::now();
                }
            }
        }
    }

    /// Clears the bar.
    pub fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
