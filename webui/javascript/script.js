// A1111's page JavaScript API, which extension scripts call (written from its documented behaviour):
// gradioApp(), onUiLoaded / onUiUpdate / onAfterUiUpdate / onOptionsChanged / onOptionsAvailable /
// onUiTabChange, executeCallbacks, get_uiCurrentTab(), get_uiCurrentTabContent(), updateInput(target),
// and the globals opts (the settings, kept current), titles (tooltips) and localization.
// Loaded first in the page's <head> (webui/page_scripts.py), extensions' scripts last, while the page is
// parsed (before DOMContentLoaded, before Gradio builds the UI): a MutationObserver on the whole document
// drives the callbacks, and onUiLoaded fires once our UI (the txt2img prompt box) exists; a callback
// registered after that still runs once.

var opts = {};
var titles = window.titles || {};
var localization = window.localization || {};

var uiUpdateCallbacks = [];
var uiAfterUpdateCallbacks = [];
var uiLoadedCallbacks = [];
var uiTabChangeCallbacks = [];
var optionsChangedCallbacks = [];
var optionsAvailableCallbacks = [];

function gradioApp() {
    var elems = document.getElementsByTagName("gradio-app");
    var elem = elems.length === 0 ? document : elems[0];
    if (elem !== document) {
        elem.getElementById = function (id) {
            return document.getElementById(id);
        };
    }
    return elem.shadowRoot ? elem.shadowRoot : elem;
}

// Each callback runs on its own: one that throws is logged and the others still run.
function executeCallbacks(queue, arg) {
    for (var i = 0; i < queue.length; i++) {
        try {
            queue[i](arg);
        } catch (e) {
            console.error("error running callback", queue[i], ":", e);
        }
    }
}

var uiLoadedFired = false;

function onUiLoaded(callback) {
    uiLoadedCallbacks.push(callback);
    if (uiLoadedFired) setTimeout(function () { executeCallbacks([callback]); }, 0);
}
function onUiUpdate(callback) {
    uiUpdateCallbacks.push(callback);
}
function onAfterUiUpdate(callback) {
    uiAfterUpdateCallbacks.push(callback);
}
function onUiTabChange(callback) {
    uiTabChangeCallbacks.push(callback);
}
function onOptionsChanged(callback) {
    optionsChangedCallbacks.push(callback);
}
function onOptionsAvailable(callback) {
    optionsAvailableCallbacks.push(callback);
    if (Object.keys(opts).length !== 0) setTimeout(function () { executeCallbacks([callback]); }, 0);
}

// The selected top-level tab's button and its panel (not those of tabs nested in a tab).
function topTabs() {
    return gradioApp().querySelector("#tabs");
}
function get_uiCurrentTab() {
    var tabs = topTabs();
    if (!tabs) return null;
    var buttons = tabs.querySelectorAll("button[role='tab'], .tab-nav > button");
    for (var i = 0; i < buttons.length; i++) {
        var button = buttons[i];
        var selected = button.getAttribute("aria-selected") === "true" || button.classList.contains("selected");
        if (selected && button.closest("#tabs, .tabs") === tabs) return button;
    }
    return null;
}
function get_uiCurrentTabContent() {
    var tabs = topTabs();
    if (!tabs) return null;
    var panels = tabs.querySelectorAll(".tabitem[id^='tab_']");
    for (var i = 0; i < panels.length; i++) {
        var panel = panels[i];
        if (panel.parentElement.closest("#tabs, .tabs") !== tabs) continue;
        if (panel.style.display !== "none" && panel.offsetParent !== null) return panel;
    }
    return null;
}

// Tell Gradio that a script changed an input's value (A1111: an "input" event that bubbles).
function updateInput(target) {
    var event = new Event("input", {bubbles: true});
    Object.defineProperty(event, "target", {value: target});
    target.dispatchEvent(event);
}

// opts: parsed from the hidden #settings_json box, which the server refills on load, after Apply settings
// and after a quicksetting change; its textarea's value setter is watched (Gradio sets it directly).
function readOptions(text) {
    var first = Object.keys(opts).length === 0;
    try {
        opts = JSON.parse(text || "{}");
    } catch (e) {
        console.error("settings_json is not JSON:", e);
        return;
    }
    if (first && Object.keys(opts).length !== 0) executeCallbacks(optionsAvailableCallbacks);
    executeCallbacks(optionsChangedCallbacks);
}

function watchOptions() {
    var box = gradioApp().getElementById("settings_json");
    var textarea = box && box.querySelector("textarea");
    if (!textarea || textarea.dataset.optsWatched) return;
    textarea.dataset.optsWatched = "1";
    var native = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, "value");
    Object.defineProperty(textarea, "value", {
        get: function () { return native.get.call(textarea); },
        set: function (text) {
            var old = native.get.call(textarea);
            native.set.call(textarea, text);
            if (text !== old) readOptions(text);
        },
    });
    if (textarea.value && textarea.value !== "{}") readOptions(textarea.value);
}

// titles: tooltip text by an element's text (A1111's hints.js); extensions add their own entries.
function applyTitles() {
    gradioApp().querySelectorAll("button, span, p, select option").forEach(function (elem) {
        if (elem.title) return;
        var text = (elem.textContent || "").trim();
        var tooltip = Object.prototype.hasOwnProperty.call(titles, text) ? titles[text] : null;
        if (tooltip) elem.title = localization[tooltip] || tooltip;
    });
}
onAfterUiUpdate(applyTitles);

(function () {
    var currentTab = null;
    var afterUpdateTimer = null;

    function onMutations(mutations) {
        watchOptions();
        if (!uiLoadedFired && gradioApp().querySelector("#txt2img_prompt")) {
            uiLoadedFired = true;
            executeCallbacks(uiLoadedCallbacks);
        }
        executeCallbacks(uiUpdateCallbacks, mutations);
        var tab = get_uiCurrentTab();
        if (tab && tab !== currentTab) {
            currentTab = tab;
            executeCallbacks(uiTabChangeCallbacks);
        }
        clearTimeout(afterUpdateTimer);  // once the page is quiet again
        afterUpdateTimer = setTimeout(function () { executeCallbacks(uiAfterUpdateCallbacks); }, 200);
    }

    new MutationObserver(onMutations).observe(document.documentElement, {childList: true, subtree: true});
})();
