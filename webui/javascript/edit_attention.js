// Ctrl+Up / Ctrl+Down (Cmd on macOS) in a prompt box: raise / lower the emphasis of the selection, as A1111's
// edit-attention: "(text:1.1)" in steps of 0.1 (extra networks "<lora:name:0.8>" in steps of 0.05); with no
// selection the surrounding (...) / <...> block or the word under the caret is taken; weight 1 drops the parens.
(function () {
    var STEP_ATTENTION = 0.1;
    var STEP_EXTRA = 0.05;
    var DELIMITERS = ".,\\/!?%^*;:{}=`~() \t\r\n";

    function blockAroundCaret(text, caret, open, close) {
        var before = text.substring(0, caret);
        var openAt = before.lastIndexOf(open);
        if (openAt === -1 || before.lastIndexOf(close) > openAt) return null;
        var after = text.substring(caret);
        var closeAt = after.indexOf(close);
        var nextOpen = after.indexOf(open);
        if (closeAt === -1 || (nextOpen !== -1 && nextOpen < closeAt)) return null;
        var content = text.substring(openAt + 1, caret + closeAt);
        var start = openAt + 1;
        var colon = content.lastIndexOf(":");
        var weighted = colon !== -1 && /^-?[\d.]+$/.test(content.substring(colon + 1));
        return [start, start + (weighted ? colon : content.length)];
    }

    function wordAroundCaret(text, caret) {
        var start = caret, end = caret;
        while (start > 0 && DELIMITERS.indexOf(text[start - 1]) === -1) start--;
        while (end < text.length && DELIMITERS.indexOf(text[end]) === -1) end++;
        return [start, end];
    }

    function formatWeight(weight) {
        weight = parseFloat(weight.toPrecision(12));
        return Number.isInteger(weight) ? weight + ".0" : String(weight);
    }

    // {text, start, end} after one step up (sign = 1) or down (sign = -1); null when nothing applies.
    function step(text, start, end, sign) {
        if (start === end) {
            var range = blockAroundCaret(text, start, "<", ">") || blockAroundCaret(text, start, "(", ")")
                || blockAroundCaret(text, start, "[", "]") || wordAroundCaret(text, start);
            start = range[0];
            end = range[1];
        }
        while (end > start && text[end - 1] === " ") end--;
        while (start < end && text[start] === " ") start++;
        if (start === end) return null;
        var opener = start > 0 ? text[start - 1] : "";
        var closer = ")";
        var delta = STEP_ATTENTION;
        if (opener === "<") {
            closer = ">";
            delta = STEP_EXTRA;
        } else if ((opener === "(" && text[end] === ")") || (opener === "[" && text[end] === "]")) {
            // old-style ((emphasis)) / [de-emphasis]: rewrite as one (text:weight) first
            var depth = 0;
            while (text[start - depth - 1] === opener && text[end + depth] === text[end]) depth++;
            var old = opener === "[" ? Math.pow(1 / 1.1, depth) : Math.pow(1.1, depth);
            old = Math.round(old / STEP_ATTENTION) * STEP_ATTENTION;
            text = text.slice(0, start - depth) + "(" + text.slice(start, end) + ":" + formatWeight(old) + ")"
                + text.slice(end + depth);
            start -= depth - 1;
            end -= depth - 1;
        } else if (opener !== "(" || text[end] !== ":") {
            text = text.slice(0, start) + "(" + text.slice(start, end) + ":1.0)" + text.slice(end);
            start++;
            end++;
        }
        if (text[end] !== ":") return null;
        var weightEnd = text.indexOf(closer, end + 1);
        if (weightEnd === -1) return null;
        var weight = parseFloat(text.slice(end + 1, weightEnd));
        if (isNaN(weight)) return null;
        weight += sign * delta;
        if (closer === ")" && Math.abs(weight - 1) < 1e-9) {
            text = text.slice(0, start - 1) + text.slice(start, end) + text.slice(weightEnd + 1);
            return {text: text, start: start - 1, end: end - 1};
        }
        text = text.slice(0, end + 1) + formatWeight(weight) + text.slice(weightEnd);
        return {text: text, start: start, end: end};
    }

    document.addEventListener("keydown", function (event) {
        if (!(event.ctrlKey || event.metaKey) || (event.key !== "ArrowUp" && event.key !== "ArrowDown")) return;
        var box = event.target;
        if (!box.matches || !box.matches("[id$='_prompt'] textarea, [id$='_neg_prompt'] textarea")) return;
        var result = step(box.value, box.selectionStart, box.selectionEnd, event.key === "ArrowUp" ? 1 : -1);
        event.preventDefault();
        if (!result) return;
        box.value = result.text;
        box.setSelectionRange(result.start, result.end);
        box.dispatchEvent(new Event("input", {bubbles: true}));  // Gradio reads the value on input
    });

    window.editAttentionStep = step;  // for tests and extensions
})();
