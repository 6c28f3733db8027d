package cdp.spark;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.Iterator;
import java.util.Map;
import org.apache.spark.sql.api.java.UDF2;

/**
 * DuckDB's json_merge_patch on Spark, which keeps JSON as text and has no merge: RFC 7396 as yyjson (DuckDB's
 * JSON library) applies it, in its order. A patch that is not an object replaces the target; a target that is
 * not an object (or NULL) counts as {}. The merged object holds first the target's keys the patch does not
 * name, in their order, then the patch's keys in its order, each merged recursively, a NULL one dropped.
 * Written compactly, as DuckDB writes JSON.
 */
public final class JsonMergePatch implements UDF2<String, String, String> {
    private static final long serialVersionUID = 1L;
    private static final ObjectMapper MAPPER = new ObjectMapper();

    @Override
    public String call(String target, String patch) throws JsonProcessingException {
        if (patch == null) {
            return null;
        }
        JsonNode original = target == null ? null : MAPPER.readTree(target);
        return MAPPER.writeValueAsString(merge(original, MAPPER.readTree(patch)));
    }

    private static JsonNode merge(JsonNode target, JsonNode patch) {
        if (!patch.isObject()) {
            return patch;
        }
        ObjectNode merged = MAPPER.createObjectNode();
        if (target != null && target.isObject()) {
            for (Iterator<Map.Entry<String, JsonNode>> kept = target.fields(); kept.hasNext();) {
                Map.Entry<String, JsonNode> field = kept.next();
                if (!patch.has(field.getKey())) {
                    merged.set(field.getKey(), field.getValue());
                }
            }
        }
        for (Iterator<Map.Entry<String, JsonNode>> given = patch.fields(); given.hasNext();) {
            Map.Entry<String, JsonNode> field = given.next();
            if (field.getValue().isNull()) {
                continue;
            }
            JsonNode old = target != null && target.isObject() ? target.get(field.getKey()) : null;
            merged.set(field.getKey(), merge(old, field.getValue()));
        }
        return merged;
    }
}
