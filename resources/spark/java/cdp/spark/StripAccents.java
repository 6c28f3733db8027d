package cdp.spark;

import java.text.Normalizer;
import org.apache.spark.sql.api.java.UDF1;

/**
 * DuckDB's strip_accents on Spark: the canonical decomposition (NFD) of a string without its marks
 * (Unicode categories Mn, Mc and Me), which is what utf8proc's STRIPMARK option leaves.
 */
public final class StripAccents implements UDF1<String, String> {
    private static final long serialVersionUID = 1L;

    @Override
    public String call(String value) {
        if (value == null) {
            return null;
        }
        String decomposed = Normalizer.normalize(value, Normalizer.Form.NFD);
        StringBuilder kept = new StringBuilder(decomposed.length());
        decomposed.codePoints().forEach(c -> {
            int type = Character.getType(c);
            if (type != Character.NON_SPACING_MARK && type != Character.ENCLOSING_MARK
                    && type != Character.COMBINING_SPACING_MARK) {
                kept.appendCodePoint(c);
            }
        });
        return kept.toString();
    }
}
