// 20,000 threads, one after another: each allocates a little and ends. Rust's std runs
// pthread_getattr_np at every thread's start (for its stack guard), which glibc does with
// the new thread's descriptor lock held while it mallocs.
use std::env;
use std::thread;

#[inline(never)]
fn battery_thread_work(i: usize) -> usize {
    let v: Vec<usize> = (0..64).map(|x| x * i).collect();
    let s = format!("thread-{}", i);
    s.len() + v.iter().sum::<usize>() % 7
}

fn main() {
    let n: usize = env::args().nth(1).map(|a| a.parse().unwrap()).unwrap_or(20000);
    let mut total = 0usize;
    for i in 0..n {
        total += thread::spawn(move || battery_thread_work(i)).join().unwrap();
    }
    println!("spawned {} threads one after another, total {}", n, total);
}
