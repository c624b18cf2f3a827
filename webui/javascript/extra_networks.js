// The extra networks panel (webui/extra_networks_ui.py): cards rendered by the server, events handled here
// by delegation (the panes are re-rendered on refresh and after a save).
// - a card click adds its text to the prompt last focused in its tab (a Lora's always to the prompt, its
//   negative text to the negative prompt); clicking a card whose text is already there removes it (A1111).
// - search filters the cards by name, alias, path and description; a folder button searches its path.
// - sort by name / date / path, ascending or descending.
// - the card's edit button opens the metadata dialog (a hidden box + a hidden button, handled in Python).

var extraNetworksActivePrompt = {};

document.addEventListener("focusin", function (event) {
    var box = event.target;
    if (!box || box.tagName !== "TEXTAREA") return;
    var holder = box.closest("[id$='_prompt'], [id$='_neg_prompt']");
    if (!holder) return;
    var match = holder.id.match(/^(txt2img|img2img)_(neg_)?prompt$/);
    if (match) extraNetworksActivePrompt[match[1]] = box;
});

function extraNetworksPromptBox(tab, negative) {
    var id = tab + (negative ? "_neg_prompt" : "_prompt");
    return gradioApp().querySelector("#" + id + " textarea");
}

function extraNetworksAddText(box, text) {
    if (!box || !text) return;
    var separator = (typeof opts !== "undefined" && opts.extra_networks_add_text_separator) || " ";
    if (box.value.indexOf(text) !== -1) {
        box.value = box.value.replace(separator + text, "").replace(text, "").trim();
    } else {
        box.value = box.value.trim() ? box.value.replace(/\s+$/, "") + separator + text : text;
    }
    updateInput(box);
}

function extraNetworksCardClicked(card) {
    var pane = card.closest(".extra-network-pane");
    var tab = pane.dataset.tabname;
    var negative = card.dataset.negative;
    var target = extraNetworksPromptBox(tab, false);
    if (card.dataset.allowNegative && extraNetworksActivePrompt[tab]) target = extraNetworksActivePrompt[tab];
    extraNetworksAddText(target, card.dataset.prompt);
    if (negative) extraNetworksAddText(extraNetworksPromptBox(tab, true), negative);
}

function extraNetworksEdit(card) {
    var pane = card.closest(".extra-network-pane");
    var tab = pane.dataset.tabname;
    var box = gradioApp().querySelector("#" + tab + "_extra_edit_target textarea, #" + tab + "_extra_edit_target input");
    if (!box) return;
    box.value = JSON.stringify({kind: pane.dataset.kind, name: card.dataset.name});
    updateInput(box);
    gradioApp().querySelector("#" + tab + "_extra_edit_open").click();
}

function extraNetworksApplySearch(pane) {
    var text = pane.querySelector(".extra-network-search").value.toLowerCase().trim();
    pane.querySelectorAll(".extra-network-card").forEach(function (card) {
        card.style.display = !text || card.dataset.search.indexOf(text) !== -1 ? "" : "none";
    });
}

function extraNetworksApplySort(pane) {
    var key = "sort" + pane.querySelector(".extra-network-sort").value.replace(/^./, function (c) { return c.toUpperCase(); });
    var descending = pane.querySelector(".extra-network-sort-dir").dataset.dir === "desc";
    var holder = pane.querySelector(".extra-network-cards");
    var cards = Array.prototype.slice.call(holder.querySelectorAll(".extra-network-card"));
    cards.sort(function (a, b) {
        var x = a.dataset[key], y = b.dataset[key];
        var order = x < y ? -1 : x > y ? 1 : 0;
        return descending ? -order : order;
    });
    cards.forEach(function (card) { holder.appendChild(card); });
}

document.addEventListener("click", function (event) {
    var target = event.target;
    if (!target.closest || !target.closest(".extra-network-pane")) return;
    var pane = target.closest(".extra-network-pane");
    if (target.closest(".card-edit")) {
        event.stopPropagation();
        extraNetworksEdit(target.closest(".extra-network-card"));
    } else if (target.closest(".extra-network-card")) {
        extraNetworksCardClicked(target.closest(".extra-network-card"));
    } else if (target.closest(".extra-network-dir")) {
        var search = pane.querySelector(".extra-network-search");
        search.value = target.closest(".extra-network-dir").dataset.path;
        extraNetworksApplySearch(pane);
    } else if (target.closest(".extra-network-sort-dir")) {
        var button = target.closest(".extra-network-sort-dir");
        var descending = button.dataset.dir !== "desc";
        button.dataset.dir = descending ? "desc" : "asc";
        button.textContent = descending ? "Descending" : "Ascending";
        extraNetworksApplySort(pane);
    }
});

document.addEventListener("input", function (event) {
    if (event.target.classList && event.target.classList.contains("extra-network-search")) {
        extraNetworksApplySearch(event.target.closest(".extra-network-pane"));
    }
});

document.addEventListener("change", function (event) {
    if (event.target.classList && event.target.classList.contains("extra-network-sort")) {
        extraNetworksApplySort(event.target.closest(".extra-network-pane"));
    }
});
