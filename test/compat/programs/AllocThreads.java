// Eight threads allocating on the Java heap (strings, arrays, lists) and natively: every
// Deflater and Inflater allocates its zlib state with malloc and frees it in end().
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32;
import java.util.zip.Deflater;
import java.util.zip.Inflater;

public class AllocThreads {
    static long work(int id, int rounds) throws Exception {
        long sum = 0;
        byte[] input = new byte[32 << 10];
        for (int i = 0; i < input.length; i++) input[i] = (byte) ((i * (id + 3)) % 61 + 'A');
        byte[] packed = new byte[input.length * 2];
        byte[] unpacked = new byte[input.length];
        for (int r = 0; r < rounds; r++) {
            List<String> list = new ArrayList<>();
            for (int j = 0; j < 200; j++) list.add("t" + id + "-r" + r + "-" + j);
            long[] arr = new long[256 + r % 512];
            for (int j = 0; j < arr.length; j++) arr[j] = j * r;
            sum += String.join(";", list).length() + arr[arr.length - 1];

            Deflater d = new Deflater(r % 9 + 1);
            d.setInput(input);
            d.finish();
            int n = d.deflate(packed);
            d.end();
            Inflater inf = new Inflater();
            inf.setInput(packed, 0, n);
            int m = inf.inflate(unpacked);
            inf.end();
            CRC32 crc = new CRC32();
            crc.update(unpacked, 0, m);
            sum += crc.getValue() % 1000 + m;
        }
        return sum;
    }

    public static void main(String[] args) throws Exception {
        int threads = 8;
        int rounds = args.length > 0 ? Integer.parseInt(args[0]) : 300;
        long[] out = new long[threads];
        Thread[] ts = new Thread[threads];
        for (int i = 0; i < threads; i++) {
            final int id = i;
            ts[i] = new Thread(() -> {
                try {
                    out[id] = work(id, rounds);
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            ts[i].start();
        }
        long sum = 0;
        for (int i = 0; i < threads; i++) {
            ts[i].join();
            sum += out[i];
        }
        System.out.println("threads " + threads + " rounds " + rounds + " checksum " + sum);
    }
}
