//! How long a session lets a burst's frames gather between two writes.
//!
//! A fixed window (`--ws-coalesce`) amortises the cost of a `write` (~7 µs on
//! loopback) over the frames that arrive meanwhile, but every frame of a burst may
//! wait that long. The pace adapts the window to the rate the session's frames come
//! at: it aims at `--ws-coalesce-frames` frames per write, so a busy session writes
//! more often (lower latency, the same frames per write) and a session whose frames
//! come slowly waits longer. When the machine is short of CPU and the rate falls,
//! the window grows instead of the number of writes, so the CPU per delivered frame
//! stays bounded (a fixed window let a loaded host slip into writing every frame
//! alone, which loaded it more): up to `--ws-coalesce` for a small audience, longer
//! for a large broadcast ([`crate::hub::Hub::window`]).

use crate::hub::Window;
use std::time::Duration;

/// The shortest window: tokio's timer ticks once a millisecond.
const MIN_WINDOW_US: u64 = 1_000;

/// One session's window, learned from its last writes (8 bytes in the task).
#[derive(Debug, Default, Clone, Copy)]
pub struct Pace {
    /// The window in µs (0: not learned yet, the start window).
    window_us: u32,
    /// Whether the next write takes what gathered over one window (else it is the
    /// first after a quiet spell and tells nothing about the rate).
    gathered: bool,
    /// Where in [half, whole] of the window this session ends it (0–255), so the
    /// sessions of one broadcast, which wrote its first frame together, do not all
    /// wake in the same timer tick for every later window.
    spread: u8,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .min(u64::from(u32::MAX))
}

impl Pace {
    /// A pace for the session with `id`: its spread derives from the id.
    pub fn for_session(id: &str) -> Self {
        let h = id.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        Self {
            spread: (h >> 24) as u8,
            ..Self::default()
        }
    }

    /// The window to wait: `window_us` shortened by this session's spread when
    /// `spread` is on.
    fn spread(&self, window_us: u64, spread: bool) -> Duration {
        let cut = if spread {
            window_us * u64::from(self.spread) / 512
        } else {
            0
        };
        Duration::from_micros(window_us - cut)
    }

    /// The window to wait after a write that took `frames` frames from the queue.
    pub fn after_write(&mut self, frames: usize, w: &Window) -> Duration {
        let start = micros(w.start);
        if start < MIN_WINDOW_US {
            return w.start;
        }
        if w.target == 0 {
            return self.spread(start, w.spread);
        }
        let max = micros(w.max).max(start);
        let current = match u64::from(self.window_us) {
            0 => start,
            n => n.min(max),
        };
        let next = if self.gathered {
            // `frames` came in `current`: the window that would have gathered
            // `target` of them at that rate.
            (current * u64::from(w.target) / frames.max(1) as u64).clamp(MIN_WINDOW_US, max)
        } else {
            current
        };
        self.window_us = next as u32;
        self.spread(next, w.spread)
    }

    /// Records whether frames were queued during the window just waited. If not,
    /// the next write (the first frame after the spell, written at once) says
    /// nothing about the rate, and the window doubles (up to the longest): frames
    /// now come more slowly than one per window, and a window that stayed short
    /// would write each alone — the costliest pace, when the CPU is scarcest.
    pub fn gathered(&mut self, any: bool) {
        self.gathered = any;
        if !any && self.window_us != 0 {
            self.window_us = self.window_us.saturating_mul(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn window(start: u64, max: u64, target: u32) -> Window {
        Window {
            start: MS * start as u32,
            max: MS * max as u32,
            target,
            spread: false,
        }
    }

    #[test]
    fn a_first_write_waits_the_start_window_then_the_window_follows_the_rate() {
        let w = window(20, 100, 8);
        let mut p = Pace::default();
        assert_eq!(p.after_write(1, &w), MS * 20);
        p.gathered(true);
        // 20 frames in 20 ms: 1 per ms, 8 per write means 8 ms.
        assert_eq!(p.after_write(20, &w), MS * 8);
        p.gathered(true);
        assert_eq!(p.after_write(8, &w), MS * 8);
        p.gathered(true);
        // Twice as fast: half the window; never under 1 ms.
        assert_eq!(p.after_write(16, &w), MS * 4);
        p.gathered(true);
        assert_eq!(p.after_write(200, &w), MS);
        p.gathered(true);
        // Slower: it grows, past the start window up to the longest.
        assert_eq!(p.after_write(1, &w), MS * 8);
        p.gathered(true);
        assert_eq!(p.after_write(1, &w), MS * 64);
        p.gathered(true);
        assert_eq!(p.after_write(1, &w), MS * 100);
        // A smaller audience (a lower longest window) caps what was learned.
        p.gathered(true);
        assert_eq!(p.after_write(8, &window(20, 20, 8)), MS * 20);
    }

    #[test]
    fn sessions_end_their_windows_at_different_points() {
        let a = Pace::for_session("n-1-0");
        let b = Pace::for_session("n-1-1");
        assert_ne!(a.spread, b.spread);
        let mut c = a;
        let spread = Window {
            spread: true,
            ..window(20, 20, 0)
        };
        let w = c.after_write(1, &spread);
        assert!(w <= MS * 20 && w >= MS * 10, "{w:?}");
        assert_eq!(c.after_write(1, &window(20, 20, 0)), MS * 20);
    }

    #[test]
    fn an_empty_window_doubles_the_next_one() {
        let w = window(20, 20, 8);
        let mut p = Pace::default();
        p.after_write(1, &w);
        p.gathered(true);
        assert_eq!(p.after_write(80, &w), MS * 2);
        // Nothing came: the next write is a first frame, and the window doubles.
        p.gathered(false);
        assert_eq!(p.after_write(1, &w), MS * 4);
        p.gathered(false);
        p.gathered(false);
        p.gathered(false);
        assert_eq!(p.after_write(1, &w), MS * 20);
    }

    #[test]
    fn no_target_or_no_window_is_the_fixed_window() {
        let mut p = Pace::default();
        p.gathered(true);
        assert_eq!(p.after_write(100, &window(20, 100, 0)), MS * 20);
        assert_eq!(p.after_write(100, &window(0, 100, 8)), Duration::ZERO);
    }
}
