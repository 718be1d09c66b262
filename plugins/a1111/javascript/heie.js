// HEIE: the verdict panel under the gallery follows the selected image. The WebUI refreshes its own
// infotext by clicking its hidden "{tab}_generation_info_button" whenever the selection changes (a click
// on the gallery, the arrow keys, closing the full-screen view); each of those clicks also clicks the
// panel's hidden button, whose handler (scripts/heie.py) reads the same selected_gallery_index().
onAfterUiUpdate(function() {
    for (const tab of ["txt2img", "img2img"]) {
        const theirs = gradioApp().getElementById(tab + "_generation_info_button");
        if (!theirs || theirs.dataset.heieFollows) {
            continue;
        }
        theirs.dataset.heieFollows = "1";
        theirs.addEventListener("click", function() {
            gradioApp().getElementById("heie_verdict_button_" + tab)?.click();
        });
    }
});
