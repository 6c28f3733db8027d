package cdp.spark;

import org.apache.spark.sql.api.java.UDF2;

/** DuckDB's levenshtein on Spark: insertions, deletions and substitutions of Unicode code points. */
public final class Levenshtein implements UDF2<String, String, Long> {
    private static final long serialVersionUID = 1L;

    @Override
    public Long call(String left, String right) {
        if (left == null || right == null) {
            return null;
        }
        return (long) distance(left.codePoints().toArray(), right.codePoints().toArray());
    }

    static int distance(int[] a, int[] b) {
        int[] previous = new int[b.length + 1];
        int[] current = new int[b.length + 1];
        for (int j = 0; j <= b.length; j++) {
            previous[j] = j;
        }
        for (int i = 1; i <= a.length; i++) {
            current[0] = i;
            for (int j = 1; j <= b.length; j++) {
                int substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
                current[j] = Math.min(substitution, Math.min(previous[j], current[j - 1]) + 1);
            }
            int[] swap = previous;
            previous = current;
            current = swap;
        }
        return previous[b.length];
    }
}
