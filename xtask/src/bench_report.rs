//! Turns the output of `cargo bench --workspace` into docs/benchmarks.md: the machine,
//! one table and one SVG bar chart (docs/bench/*.svg) per figure, the hand-written notes
//! of docs/bench/notes.md, and the raw output.
//!
//! The benches are parsed as they print today (their table rows and ratio lines); a
//! bench whose output is not recognised is still kept in the raw section.

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// One figure: a title, what the ratio means, and (label, ratio) bars.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub id: &'static str,
    pub title: &'static str,
    pub meaning: &'static str,
    pub bars: Vec<(String, f64)>,
}

/// The numbers of a table row: every token that parses as a float (a trailing `x` or
/// `×` dropped).
fn numbers(line: &str) -> Vec<f64> {
    line.split(|c: char| c.is_whitespace() || c == '|')
        .filter_map(|t| {
            t.trim_end_matches('x')
                .trim_end_matches('×')
                .parse::<f64>()
                .ok()
        })
        .collect()
}

/// Extracts every figure the benches print.
pub fn parse(output: &str) -> Vec<Figure> {
    let mut codec = Vec::new();
    let mut pool = Vec::new();
    let mut api = Vec::new();
    let mut http = Vec::new();
    let mut memory = Vec::new();
    let mut section = "";
    // The pool bench prints one table per tokio runtime; the second is labelled.
    let mut runtime = "";
    for line in output.lines() {
        let t = line.trim();
        if let Some(rt) = t.strip_prefix("tokio runtime:") {
            runtime = if rt.trim().starts_with("current") {
                ", current-thread runtime"
            } else {
                ""
            };
        }
        if t.starts_with("gater-pool vs BEAM client") {
            section = "pool";
        } else if t.starts_with("op ") && t.contains("gater/s") {
            section = "api";
        } else if t.starts_with("path") && t.contains("vs erl") {
            section = "codec";
        }
        // gater-term: `<path words> µs MB/s records/s 1.23x`
        if section == "codec" && t.ends_with('x') && !t.starts_with("path") {
            let n = numbers(t);
            if let (Some(ratio), Some(pos)) = (n.last(), t.find(|c: char| c.is_ascii_digit())) {
                codec.push((t[..pos].trim().to_owned(), *ratio));
            }
        }
        // gater-pool: `conc | ours ... | beam ... | thr x p99 x cpu x`
        if section == "pool" && t.matches('|').count() == 3 && !t.starts_with("conc") {
            let n = numbers(t);
            if n.len() == 12 {
                let who = format!("{} callers{runtime}", n[0]);
                pool.push((format!("{who}: throughput"), n[9]));
                pool.push((format!("{who}: p99 (ours/BEAM)"), n[10]));
                pool.push((format!("{who}: CPU (ours/BEAM)"), n[11]));
            }
        }
        // gater-api: `op conc | gater ... | beam ... | thr × p99 b/g`
        if section == "api" && t.matches('|').count() == 3 && !t.starts_with("op ") {
            let n = numbers(t);
            let op = t.split_whitespace().next().unwrap_or("?");
            if n.len() >= 11 {
                api.push((format!("{op} ×{}: throughput", n[0]), n[n.len() - 2]));
                api.push((format!("{op} ×{}: p99 (BEAM/ours)", n[0]), n[n.len() - 1]));
            }
        }
        // gater-http: `append  http/api throughput ratio: 0.81 (reqwest client: 0.62)`
        if let Some(rest) = t.split_once("http/api throughput ratio:") {
            let op = rest.0.trim().to_owned();
            let n = numbers(&rest.1.replace(['(', ')', ':'], " "));
            if let Some(r) = n.first() {
                http.push((format!("{op}: raw HTTP/1.1 client"), *r));
            }
            if let Some(r) = n.get(1) {
                http.push((format!("{op}: reqwest client"), *r));
            }
        }
        // gater-http: `rss: idle 12.3 MB; with 1000 open SSE subscriptions 45.6 MB ...`
        if let Some(rest) = t.strip_prefix("rss: idle ") {
            let n = numbers(&rest.replace(';', " "));
            if n.len() >= 3 {
                memory.push(("daemon idle (MB)".to_owned(), n[0]));
                memory.push((format!("with {} SSE streams (MB)", n[1]), n[2]));
            }
        }
        if let Some(rest) = t.strip_prefix("our RSS after the runs:") {
            if let Some(v) = numbers(rest).first() {
                memory.push(("gater-pool bench process (MiB)".to_owned(), *v));
            }
        }
    }
    let mut figs = vec![
        Figure {
            id: "codec",
            title: "Term codec vs Erlang's binary_to_term / term_to_binary",
            meaning: "Erlang's time ÷ ours for a batch of EventRecords (> 1: ours is faster)",
            bars: codec,
        },
        Figure {
            id: "pool",
            title: "gater-pool calls vs a BEAM-native gen_server:call client",
            meaning: "throughput: ours ÷ BEAM's (> 1 better); p99 and CPU: ours ÷ BEAM's (< 1 better)",
            bars: pool,
        },
        Figure {
            id: "api",
            title: "gater-api vs the testbed's ExESDBGater.API-style load generator",
            meaning: "throughput: ours ÷ BEAM's (> 1 better); p99: BEAM's ÷ ours (≥ 1: ours no worse)",
            bars: api,
        },
        Figure {
            id: "http",
            title: "HTTP API vs the gater-api library (64 concurrent)",
            meaning: "HTTP requests/s ÷ library calls/s (the cost of HTTP/JSON)",
            bars: http,
        },
        Figure {
            id: "memory",
            title: "Memory",
            meaning: "resident set size (absolute, not a ratio)",
            bars: memory,
        },
    ];
    figs.retain(|f| !f.bars.is_empty());
    figs
}

/// A horizontal bar chart, hand-written SVG; a dashed line marks 1.0 for ratios.
pub fn svg(f: &Figure) -> String {
    let row = 22.0;
    let label_w = 300.0;
    let bar_w = 360.0;
    let h = 40.0 + row * f.bars.len() as f64;
    let max = f.bars.iter().map(|(_, v)| *v).fold(1.0_f64, f64::max) * 1.1;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#,
        w = label_w + bar_w + 70.0
    );
    let _ = writeln!(
        s,
        r#"<text x="4" y="16" font-weight="bold">{}</text>"#,
        xml(f.title)
    );
    for (i, (label, v)) in f.bars.iter().enumerate() {
        let y = 28.0 + row * i as f64;
        let w = bar_w * v / max;
        let _ = writeln!(
            s,
            r##"<text x="{lx}" y="{ty}" text-anchor="end">{l}</text><rect x="{label_w}" y="{y}" width="{w:.1}" height="{bh}" fill="#4a7ab5"/><text x="{vx:.1}" y="{ty}">{v:.2}</text>"##,
            lx = label_w - 6.0,
            ty = y + 13.0,
            l = xml(label),
            bh = row - 6.0,
            vx = label_w + w + 4.0,
        );
    }
    if f.id != "memory" {
        let x = label_w + bar_w / max;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="24" x2="{x:.1}" y2="{y2}" stroke="#c33" stroke-dasharray="4 3"/>"##,
            y2 = h - 6.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

/// nproc, CPU model, OTP release, rustc version.
pub fn machine() -> Vec<(&'static str, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    vec![
        ("cores (nproc)", cmd_out("nproc", &[])),
        ("CPU", cpu),
        (
            "Erlang/OTP",
            cmd_out(
                "erl",
                &[
                    "-noshell",
                    "-eval",
                    "io:format(\"~s\", [erlang:system_info(otp_release)]), halt().",
                ],
            ),
        ),
        ("rustc", cmd_out("rustc", &["--version"])),
        ("kernel", cmd_out("uname", &["-sr"])),
    ]
}

/// Writes docs/benchmarks.md and docs/bench/<id>.svg from the benches' output.
pub fn write(root: &Path, output: &str, date: &str) -> Result<()> {
    let figs = parse(output);
    let dir = root.join("docs/bench");
    std::fs::create_dir_all(&dir)?;
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str(
        "Written by `cargo xtask bench`, which runs every benchmark of the workspace \
         (`cargo bench --workspace`: criterion benches and the custom side-by-side ones) and \
         collects the ratios they print. Each ratio compares two sides measured in the same \
         run on the same machine. Re-run it to refresh this page.\n\n",
    );
    let _ = writeln!(md, "Run: {date}\n\n| machine | |\n|---|---|");
    for (k, v) in machine() {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    md.push('\n');
    // The hand-written reading of the figures (goals, limits, how to re-run one bench)
    // lives in docs/bench/notes.md, so that a new run keeps it.
    if let Ok(notes) = std::fs::read_to_string(dir.join("notes.md")) {
        md.push_str(notes.trim_end());
        md.push_str("\n\n");
    }
    for f in &figs {
        let _ = writeln!(md, "## {}\n\n{}.\n", f.title, f.meaning);
        let _ = writeln!(md, "![{}](bench/{}.svg)\n", f.title, f.id);
        let _ = writeln!(md, "| measure | value |\n|---|---|");
        for (l, v) in &f.bars {
            let _ = writeln!(md, "| {l} | {v:.2} |");
        }
        md.push('\n');
        std::fs::write(dir.join(format!("{}.svg", f.id)), svg(f))
            .with_context(|| format!("writing docs/bench/{}.svg", f.id))?;
    }
    md.push_str("## Raw output\n\n<details><summary>cargo bench --workspace (figure lines)</summary>\n\n```text\n");
    for line in output.lines().filter(|l| keep_raw(l)) {
        md.push_str(line);
        md.push('\n');
    }
    md.push_str("```\n\n</details>\n");
    std::fs::write(root.join("docs/benchmarks.md"), md).context("writing docs/benchmarks.md")?;
    Ok(())
}

/// Result lines of the raw output (criterion's per-bench lines and the custom tables),
/// without compile noise, the unit-test harness lines of `cargo bench` and Erlang node
/// chatter.
fn keep_raw(l: &str) -> bool {
    let t = l.trim_start();
    !(t.starts_with("Compiling")
        || t.starts_with("Running")
        || t.starts_with("Finished")
        || t.starts_with("[erl]")
        || t.starts_with("Benchmarking")
        || t.starts_with("Gnuplot")
        || t.starts_with("Warning")
        || t.starts_with("running ")
        || t.starts_with("test ")
        || t.is_empty())
}

/// Runs cargo in the workspace root, echoing its stdout line by line, and returns it.
pub fn cargo_tee(args: &[&str]) -> Result<String> {
    use std::io::{BufRead, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .args(args)
        .current_dir(crate::util::root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `cargo {}`", args.join(" ")))?;
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            out.push_str(&line);
            out.push('\n');
        }
    }
    let status = child.wait()?;
    if !status.success() {
        anyhow::bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_benches_print() {
        let out = "\
path                         µs/batch       MB/s    records/s     vs erl
erlang binary_to_term             900        100       100000          -
decode (typed)                    300        300       300000      3.00x
gater-pool vs BEAM client, gen_server:call to an echo server by pid (2-core box)
 conc |   ours c/s   p50 us   p99 us  cpu us/c |   beam c/s   p50 us   p99 us  cpu us/c |  thr x  p99 x  cpu x
  256 |      90000     2000     4000       8.0 |      50000     4000     9000      20.0 |   1.80   0.44   0.40
tokio runtime: current_thread
gater-pool vs BEAM client, gen_server:call to an echo server by pid (2-core box)
 conc |   ours c/s   p50 us   p99 us  cpu us/c |   beam c/s   p50 us   p99 us  cpu us/c |  thr x  p99 x  cpu x
  256 |      95000     2000     4000       6.0 |      50000     4000     9000      30.0 |   1.90   0.44   0.20
op       conc |    gater/s    p50 µs    p99 µs  err |     beam/s    p50 µs    p99 µs  err |   thr ×   p99 b/g
append      16 |       5000      3000      9000    0 |       4000      4000     12000    0 |    1.25      1.33
append  http/api throughput ratio: 0.81 (reqwest client: 0.62)
rss: idle 12.5 MB; with 1000 open SSE subscriptions 40.0 MB (opened in 1.2 s)
";
        let f = parse(out);
        let get = |id: &str| f.iter().find(|x| x.id == id).map(|x| x.bars.clone());
        assert_eq!(get("codec"), Some(vec![("decode (typed)".into(), 3.0)]));
        let pool = get("pool").unwrap_or_default();
        assert_eq!(pool[0], ("256 callers: throughput".into(), 1.8));
        assert_eq!(
            pool[5],
            (
                "256 callers, current-thread runtime: CPU (ours/BEAM)".into(),
                0.2
            )
        );
        let api = get("api").unwrap_or_default();
        assert_eq!(api[0], ("append ×16: throughput".into(), 1.25));
        assert_eq!(api[1].1, 1.33);
        let http = get("http").unwrap_or_default();
        assert_eq!(http[1], ("append: reqwest client".into(), 0.62));
        let mem = get("memory").unwrap_or_default();
        assert_eq!(mem[1], ("with 1000 SSE streams (MB)".into(), 40.0));
        assert!(svg(&f[0]).starts_with("<svg"));
    }
}
