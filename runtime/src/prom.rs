//! The one Prometheus text writer of the host: `# HELP`/`# TYPE` lines and samples
//! with escaped label values, for the HTTP counters and the WebSocket counters alike.

use std::fmt::{Display, Write};

/// Prometheus text exposition being written.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a metric family: its help text and type (`counter`, `gauge`, `histogram`).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample; label values are escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes a label value (backslash, double quote, newline).
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::Exposition;

    #[test]
    fn labels_are_escaped() {
        let mut e = Exposition::default();
        e.family("m_total", "counter", "things");
        e.sample("m_total", &[("container", "a\"b\\c\nd")], 3);
        e.sample("m_total", &[], 1);
        assert_eq!(
            e.finish(),
            "# HELP m_total things\n# TYPE m_total counter\nm_total{container=\"a\\\"b\\\\c\\nd\"} 3\nm_total 1\n"
        );
    }
}
