package cdp.spark;

import org.apache.spark.sql.api.java.UDF2;

/**
 * DuckDB's jaro_winkler_similarity on Spark, value for value.
 *
 * <p>DuckDB compares Unicode code points; two empty strings, or one, score 0; two single characters
 * score 1 or 0; the match window is max(length)/2 - 1; half the transpositions are counted with integer
 * division; the Winkler boost (prefix of up to 4 characters, weight 0.1) applies only above 0.7 and is
 * one fused multiply-add, as DuckDB's compiled code computes it.
 */
public final class JaroWinklerSimilarity implements UDF2<String, String, Double> {
    private static final long serialVersionUID = 1L;
    private static final double PREFIX_WEIGHT = 0.1;
    private static final double BOOST_THRESHOLD = 0.7;

    @Override
    public Double call(String left, String right) {
        if (left == null || right == null) {
            return null;
        }
        return similarity(left.codePoints().toArray(), right.codePoints().toArray());
    }

    static double similarity(int[] p, int[] t) {
        double sim = jaro(p, t);
        if (sim > BOOST_THRESHOLD) {
            int prefix = 0;
            int maxPrefix = Math.min(Math.min(p.length, t.length), 4);
            while (prefix < maxPrefix && p[prefix] == t[prefix]) {
                prefix++;
            }
            sim = Math.fma(prefix * PREFIX_WEIGHT, 1.0 - sim, sim);
        }
        return sim;
    }

    static double jaro(int[] p, int[] t) {
        int pLen = p.length;
        int tLen = t.length;
        if (pLen == 0 || tLen == 0) {
            return 0.0;
        }
        if (pLen == 1 && tLen == 1) {
            return p[0] == t[0] ? 1.0 : 0.0;
        }
        int bound = Math.max(pLen, tLen) / 2 - 1;
        // A common prefix is matched in place and never transposed.
        int prefix = 0;
        while (prefix < Math.min(pLen, tLen) && p[prefix] == t[prefix]) {
            prefix++;
        }
        long common = prefix;
        long transpositions = 0;
        int pView = pLen - prefix;
        int tView = tLen - prefix;
        if (pView > 0 && tView > 0) {
            boolean[] pFlag = new boolean[pView];
            boolean[] tFlag = new boolean[tView];
            for (int j = 0; j < tView; j++) {
                int from = Math.max(0, j - bound);
                int to = Math.min(pView - 1, j + bound);
                for (int i = from; i <= to; i++) {
                    if (!pFlag[i] && p[prefix + i] == t[prefix + j]) {
                        pFlag[i] = true;
                        tFlag[j] = true;
                        common++;
                        break;
                    }
                }
            }
            if (common == 0) {
                return 0.0;
            }
            int i = 0;
            for (int j = 0; j < tView; j++) {
                if (!tFlag[j]) {
                    continue;
                }
                while (!pFlag[i]) {
                    i++;
                }
                if (p[prefix + i] != t[prefix + j]) {
                    transpositions++;
                }
                i++;
            }
        }
        transpositions /= 2;
        double sim = 0;
        sim += (double) common / (double) pLen;
        sim += (double) common / (double) tLen;
        sim += ((double) common - (double) transpositions) / (double) common;
        return sim / 3.0;
    }
}
