// Rust allocations through Vec, String and HashMap, in functions of the program's own
// (test/cli-sites.test.ts): heaptap must name these functions, demangled without their
// legacy hash, not alloc::raw_vec, hashbrown or __rust_alloc. Built twice by
// scripts/peers/battery.sh: with the legacy mangling and with v0.
use std::collections::HashMap;

#[inline(never)]
fn build_index(n: usize) -> HashMap<String, Vec<u64>> {
    let mut index = HashMap::new();
    for i in 0..n {
        index.insert(format!("document-{i:08}"), vec![i as u64; 64]);
    }
    index
}

#[inline(never)]
fn render_report(index: &HashMap<String, Vec<u64>>) -> String {
    let mut out = String::new();
    for (k, v) in index {
        out.push_str(k);
        out.push_str(&v.len().to_string());
        out.push('\n');
    }
    out
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let index = build_index(n);
    let report = render_report(&index);
    println!("{} documents, report of {} bytes", index.len(), report.len());
}
