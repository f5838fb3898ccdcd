// Anime Video nodes: show a node's "info" text on the node itself after a run.
// Nodes that explain what they did (Interpolate Frames, Guide Storyboard) return it as
// {"ui": {"text": [info]}}; ComfyUI sends that in its "executed" message, which reaches
// onExecuted here. The text goes into a read-only box at the bottom of the node, which is
// not saved with the workflow (it belongs to the last run).
import { app } from "../../scripts/app.js";

const PREFIX = "AnimeVideo";
const WIDGET = "animevideo_info";

function showInfo(node, text) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (!widget) {
    const box = document.createElement("textarea");
    box.readOnly = true;
    box.className = "comfy-multiline-input";
    box.style.opacity = "0.85";
    box.style.fontSize = "11px";
    box.title = "What this node found on its last run";
    widget = node.addDOMWidget(WIDGET, "animevideo_info", box, {
      serialize: false,
      getValue: () => box.value,
      setValue: (value) => { box.value = value ?? ""; },
    });
    widget.serialize = false;
  }
  widget.element.value = text;
  const wanted = node.computeSize();
  node.setSize([Math.max(node.size[0], wanted[0]), Math.max(node.size[1], wanted[1])]);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "AnimeVideo.InfoOnNode",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith(PREFIX)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      const text = message?.text;
      if (Array.isArray(text) && text.length) showInfo(this, text.join("\n"));
      return result;
    };
  },
});
