//! The share of the machine's CPU time its hypervisor gave to others
//! (`steal` in `/proc/stat`) while a part ran. On a shared host this moves
//! every figure of a run (loopback copies and pseudo-terminals most), so
//! the report states it beside them.

/// Steal and total CPU time of all cores so far, in clock ticks.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice],
    // guest time being counted in user time already.
    let total = ticks.iter().take(8).sum();
    Some((*ticks.get(7)?, total))
}

/// A part's start, to tell the steal while it ran.
pub struct Steal(Option<(u64, u64)>);

impl Steal {
    /// From now on.
    pub fn start() -> Steal {
        Steal(cpu_ticks())
    }

    /// The share of CPU time stolen since the start (0 to 1; `None` where
    /// `/proc/stat` does not say).
    pub fn share(&self) -> Option<f64> {
        let (steal0, total0) = self.0?;
        let (steal1, total1) = cpu_ticks()?;
        let total = total1.checked_sub(total0).filter(|&t| t > 0)?;
        Some(steal1.saturating_sub(steal0) as f64 / total as f64)
    }
}
