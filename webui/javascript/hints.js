// Tooltips (title=) for the icon buttons, as A1111's hints.js: Gradio's Button has no title parameter.
// Keys are element-id suffixes shared by txt2img and img2img; values say what the button does.
(function () {
    var HINTS = [
        [/_res_switch_btn$/, "Switch width/height"],
        [/_random_seed$/, "Set seed to -1, which will cause a new random number to be used every time"],
        [/_reuse_seed$/, "Reuse seed from last generation, mostly useful if it was randomized"],
        [/_open_folder$/, "Show the folder where images are saved"],
        [/^save_/, "Save the selected image with its generation parameters"],
        [/_send_to_img2img$/, "Send image and generation parameters to the img2img tab"],
        [/_send_to_inpaint$/, "Send image and generation parameters to the img2img inpaint tab"],
        [/_send_to_extras$/, "Send image and generation parameters to the Extras tab"],
        [/^refresh_/, "Refresh the list"],
        [/_interrupt$/, "Stop processing images and return any results accumulated so far"],
        [/_skip$/, "Stop processing the current image and continue with the next one"],
    ];

    function hintFor(id) {
        for (var i = 0; i < HINTS.length; i++) {
            if (HINTS[i][0].test(id)) return HINTS[i][1];
        }
        return null;
    }

    function applyHints() {
        document.querySelectorAll("button[id], button[aria-label]").forEach(function (button) {
            if (button.title) return;
            var hint = hintFor(button.id) || button.getAttribute("aria-label");
            if (hint) button.title = hint;
        });
    }

    var pending = false;
    new MutationObserver(function () {
        if (pending) return;
        pending = true;
        requestAnimationFrame(function () {
            pending = false;
            applyHints();
        });
    }).observe(document.documentElement, {childList: true, subtree: true});
})();
