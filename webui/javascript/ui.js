// Keyboard shortcuts: Ctrl+Enter (Cmd+Enter) in a prompt box clicks that tab's Generate button.
(function () {
    document.addEventListener("keydown", function (event) {
        if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
        var box = event.target.closest && event.target.closest("[id$='_prompt'], [id$='_neg_prompt']");
        if (!box) return;
        var tab = box.id.replace(/_(neg_)?prompt$/, "");
        var button = document.getElementById(tab + "_generate");
        if (button) {
            event.preventDefault();
            button.click();
        }
    });
})();
