package cdp.spark;

import java.util.HashMap;
import java.util.Map;
import org.apache.spark.sql.api.java.UDF2;

/**
 * DuckDB's damerau_levenshtein on Spark: the unrestricted distance (a transposed pair may be edited
 * again, so 'ca' to 'abc' is 2), over Unicode code points.
 */
public final class DamerauLevenshtein implements UDF2<String, String, Long> {
    private static final long serialVersionUID = 1L;

    @Override
    public Long call(String left, String right) {
        if (left == null || right == null) {
            return null;
        }
        return (long) distance(left.codePoints().toArray(), right.codePoints().toArray());
    }

    static int distance(int[] a, int[] b) {
        int infinity = a.length + b.length;
        int[][] d = new int[a.length + 2][b.length + 2];
        d[0][0] = infinity;
        for (int i = 0; i <= a.length; i++) {
            d[i + 1][0] = infinity;
            d[i + 1][1] = i;
        }
        for (int j = 0; j <= b.length; j++) {
            d[0][j + 1] = infinity;
            d[1][j + 1] = j;
        }
        // The last row of `a` where each code point was seen.
        Map<Integer, Integer> lastRow = new HashMap<>();
        for (int i = 1; i <= a.length; i++) {
            int lastMatchColumn = 0;
            for (int j = 1; j <= b.length; j++) {
                int k = lastRow.getOrDefault(b[j - 1], 0);
                int l = lastMatchColumn;
                int cost = 1;
                if (a[i - 1] == b[j - 1]) {
                    cost = 0;
                    lastMatchColumn = j;
                }
                int substitution = d[i][j] + cost;
                int insertion = d[i + 1][j] + 1;
                int deletion = d[i][j + 1] + 1;
                int transposition = d[k][l] + (i - k - 1) + 1 + (j - l - 1);
                d[i + 1][j + 1] = Math.min(Math.min(substitution, insertion), Math.min(deletion, transposition));
            }
            lastRow.put(a[i - 1], i);
        }
        return d[a.length + 1][b.length + 1];
    }
}
