package cdp.spark;

import org.apache.spark.sql.api.java.UDF2;

/**
 * DuckDB's hamming on Spark: the positions at which two equally long strings differ, counted in
 * Unicode code points; empty strings and strings of different lengths are errors, as in DuckDB.
 */
public final class Hamming implements UDF2<String, String, Long> {
    private static final long serialVersionUID = 1L;

    @Override
    public Long call(String left, String right) {
        if (left == null || right == null) {
            return null;
        }
        int[] a = left.codePoints().toArray();
        int[] b = right.codePoints().toArray();
        if (a.length == 0 || b.length == 0) {
            throw new IllegalArgumentException("hamming: strings must be of length > 0");
        }
        if (a.length != b.length) {
            throw new IllegalArgumentException("hamming: strings must be of equal length");
        }
        long differing = 0;
        for (int i = 0; i < a.length; i++) {
            if (a[i] != b[i]) {
                differing++;
            }
        }
        return differing;
    }
}
