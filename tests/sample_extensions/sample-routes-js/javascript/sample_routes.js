// Uses A1111's page API as community extensions do; records what it saw in window.sampleRoutesJs.
var sampleRoutesJs = {loaded: 0, updates: 0, tabs: [], optsSeen: []};

onUiLoaded(function () {
    sampleRoutesJs.loaded += 1;
    var tab = get_uiCurrentTab();
    sampleRoutesJs.tabAtLoad = tab ? tab.textContent.trim() : null;
    var textarea = gradioApp().querySelector("#txt2img_prompt textarea");
    textarea.value = "written by extension js";
    updateInput(textarea);
});

onUiUpdate(function (mutations) {
    if (mutations && mutations.length) sampleRoutesJs.updates += 1;
});

onUiTabChange(function () {
    var content = get_uiCurrentTabContent();
    sampleRoutesJs.tabs.push(content ? content.id : null);
});

onOptionsChanged(function () {
    sampleRoutesJs.optsSeen.push(opts.eta_noise_seed_delta);
});

document.addEventListener("DOMContentLoaded", function () {
    sampleRoutesJs.domContentLoaded = !gradioApp().querySelector("#txt2img_prompt");  // before our UI
});

titles["Generate"] = "sample-routes-js tooltip";
