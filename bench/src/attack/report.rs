//! The row's lines in the bench's table.

use serde_json::Value;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// "0.42 s", or the failure and what the relay said to a new batch.
fn outcome(h: &Value) -> String {
    if h["ok"].as_bool() == Some(true) {
        format!("{:.2} s", f(&h["secs"]))
    } else {
        format!(
            "FAILED after {:.1} s: {}{}",
            f(&h["secs"]),
            h["error"].as_str().unwrap_or("?"),
            h["probe"]
                .as_str()
                .map_or(String::new(), |p| format!(" ({p})"))
        )
    }
}

/// Prints one line per scenario: honest time alone and under attack, and
/// what the relay spent meanwhile.
pub fn print_rows(a: &Value) {
    let Some(scenarios) = a["scenarios"].as_array() else {
        return;
    };
    let mib = a["honest_bytes"].as_u64().unwrap_or(0) >> 20;
    for s in scenarios {
        let names: Vec<&str> = s["attacks"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let label = if names.len() > 1 {
            "all five at once".to_string()
        } else {
            names.join("")
        };
        let runs = s["under_attack"]["runs"].as_array().map_or(0, Vec::len);
        println!(
            "| under attack ({label}): honest {mib} MiB send+get alone, under attack (median of {runs}) | {}, {} | honest succeeds |",
            outcome(&s["alone"]),
            outcome(&s["under_attack"]),
        );
        println!(
            "| … relay while the attacks were in place ({:.1} s): CPU; RSS before / peak / after | {:.2} s; {:.0} / {:.0} / {:.0} MiB | |",
            f(&s["in_place_secs"]),
            f(&s["relay_cpu_secs_in_place"]),
            f(&s["relay_rss_before_bytes"]) / crate::MIB,
            f(&s["relay_rss_peak_bytes"]) / crate::MIB,
            f(&s["relay_rss_after_bytes"]) / crate::MIB,
        );
        println!(
            "| … relay CPU from the start of the attacks (setting up included) | {:.2} s | |",
            f(&s["relay_cpu_secs_during_attack"]),
        );
        if let Some(detail) = s["detail"].as_object() {
            for (name, d) in detail {
                let what = d["summary"]
                    .as_str()
                    .or(d["setup_refused"].as_str())
                    .or(d["error"].as_str())
                    .unwrap_or("?");
                println!("| … attacker, {name} | {what} | |");
            }
        }
    }
    if let Some(worst) = a["worst"].as_array() {
        let names: Vec<&str> = worst.iter().filter_map(Value::as_str).collect();
        println!(
            "| under attack: the worst single attacks | {} | none fails the honest transfer |",
            names.join(", ")
        );
    }
}
