// 3,000 short-lived threads, four at a time: each builds a string and an array and ends.
// Every new JVM thread runs pthread_getattr_np for its stack guard pages right at its
// start, which is where a preload that samples a thread's first allocation can deadlock.
public class ShortThreads {
    public static void main(String[] args) throws Exception {
        int total = args.length > 0 ? Integer.parseInt(args[0]) : 3000;
        int wave = 4;
        long[] results = new long[total];
        for (int base = 0; base < total; base += wave) {
            Thread[] ts = new Thread[Math.min(wave, total - base)];
            for (int k = 0; k < ts.length; k++) {
                final int i = base + k;
                ts[k] = new Thread(() -> {
                    StringBuilder sb = new StringBuilder();
                    for (int j = 0; j < 32; j++) sb.append(i * 31 + j).append(',');
                    int[] a = new int[64 + i % 64];
                    for (int j = 0; j < a.length; j++) a[j] = j ^ i;
                    long s = sb.toString().hashCode();
                    for (int v : a) s += v;
                    results[i] = s;
                }, "short-" + i);
                ts[k].start();
            }
            for (Thread t : ts) t.join();
        }
        long sum = 0;
        for (long r : results) sum += r;
        System.out.println("threads " + total + " checksum " + sum);
    }
}
