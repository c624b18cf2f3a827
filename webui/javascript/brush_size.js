// Brush size scaled to the image in the img2img editors: the server writes the size for an uploaded image
// into a hidden number (#<editor>_brush_size); this moves the editor's own "Brush Size" slider to it.
(function () {
    var STARTING_SIZE = 24;  // the editors' built-in size (BRUSH_AT_512 in img2img_tab.py)
    var applied = {};

    function move(slider, size) {
        slider.value = String(size);
        slider.dispatchEvent(new Event("input", {bubbles: true}));
        slider.dispatchEvent(new Event("change", {bubbles: true}));
    }

    // true once the size is set (or being set: the popup opens, is set, and closes)
    function setSize(editor, size) {
        var slider = editor.querySelector("input[type=range]");
        if (slider) {
            move(slider, size);
            return true;
        }
        var button = editor.querySelector("button[aria-label='Brush Size']");
        if (!button) return false;
        button.click();  // opens the size popup; it renders on the next frame
        setTimeout(function () {
            var opened = editor.querySelector("input[type=range]");
            if (opened) move(opened, size);
            else applied[editor.id] = 0;  // try again on the next tick
            button.click();
        }, 150);
        return true;
    }

    setInterval(function () {
        document.querySelectorAll(".brush-size input[type=number]").forEach(function (box) {
            var holder = box.closest(".brush-size");
            var id = holder && holder.id.replace(/_brush_size$/, "");
            var size = parseInt(box.value, 10);
            if (!id || !(size > 0) || (applied[id] || STARTING_SIZE) === size) return;
            var editor = document.getElementById(id);
            if (editor && setSize(editor, size)) applied[id] = size;
        });
    }, 300);
})();
