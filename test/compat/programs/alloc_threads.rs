// Eight threads allocating through Rust's global allocator (malloc): strings, vectors,
// boxes and hash maps, freed in a different order than allocated.
use std::collections::HashMap;
use std::env;
use std::thread;

#[inline(never)]
fn battery_alloc_work(id: usize, rounds: usize) -> u64 {
    let mut sum = 0u64;
    let mut map: HashMap<String, Vec<u8>> = HashMap::new();
    for r in 0..rounds {
        let key = format!("t{}-k{}", id, r % 997);
        let val = vec![(r % 251) as u8; 16 + (r * 37 + id) % 3000];
        if let Some(old) = map.insert(key, val) {
            sum += old.len() as u64;
        }
        let boxed: Box<[u64]> = (0..(r % 64) as u64).collect::<Vec<_>>().into_boxed_slice();
        sum += boxed.iter().sum::<u64>();
        if r % 5000 == 4999 {
            map.clear();
        }
    }
    sum + map.len() as u64
}

fn main() {
    let rounds: usize = env::args().nth(1).map(|a| a.parse().unwrap()).unwrap_or(200000);
    let handles: Vec<_> = (0..8).map(|id| thread::spawn(move || battery_alloc_work(id, rounds))).collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    println!("threads 8 rounds {} checksum {}", rounds, total);
}
