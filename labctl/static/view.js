/* labctl view: draws the lab with cytoscape.js (positions computed here, no layout engine), keeps
   it current by polling api/state, shows a node's routes and sessions and a trace on demand.
   Exported (`labctl graph -f html`) the data is inline in #labctl-data and nothing is fetched.
   Lab data only ever reaches the page as text (textContent, cytoscape labels), never as HTML. */
(function () {
  "use strict";
  const inline = document.getElementById("labctl-data");
  const LIVE = !inline;
  const POLL_MS = 2000;
  const C = { ok: "#2e7d32", bad: "#c62828", unknown: "#9e9e9e", trace: "#1565c0", warn: "#ef6c00" };
  const H = 215; // height of a grid cell: a node and its pods
  let cy = null, data = null, shape = "", picked = [], busy = false;

  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "title") e.title = v; else e.setAttribute(k, v);
    }
    for (const k of kids.flat()) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
    return e;
  }
  const $ = (id) => document.getElementById(id);
  const shown = (v) => (v == null ? "?" : v === "" ? "-" : String(v));
  const labelsText = (l) => (l == null ? "?" : Object.entries(l).map(([k, v]) => k + "=" + v).join(" "));
  const stateClass = (s) => (s === "Established" ? "Established" : s === "?" ? "unknown" : "down");
  const nodeId = (name) => (data.pods.some((p) => p.name === name) ? "p:" : "n:") + name;

  function api(path) {
    return fetch(path, { cache: "no-store", credentials: "same-origin" }).then(async (r) => {
      const body = await r.json().catch(() => ({ error: r.status + " " + r.statusText }));
      if (!r.ok) throw new Error(body.error || r.statusText);
      return body;
    });
  }

  function nodeLabel(n) {
    const lines = [(n.route_reflector ? "route reflector " : "") + n.name + (n.role === "router" ? " (router)" : "")];
    if (n.role === "router") {
      // one line per interface (inspect joins them with commas)
      const ips = shown(n.physical_ip).split(",");
      shown(n.interface).split(",").forEach((ifname, i) => lines.push(ifname + " " + (ips[i] || "?")));
      if (n.asn) lines.push("AS " + n.asn);
    } else {
      lines.push(shown(n.interface) + " " + shown(n.physical_ip));
      lines.push(shown(n.tunnel_device) + " " + shown(n.tunnel_ip));
    }
    const l = labelsText(n.labels);
    if (l) lines.push(l);
    if (n.state !== "running") lines.push(n.state + (n.fault ? " (fail " + n.fault + ")" : ""));
    return lines.join("\n");
  }

  // networks side by side, each a grid of its nodes (reflectors first), pods under their node, a box
  // around them; routers above, between the networks they join. The boxes are plain nodes drawn
  // behind, not cytoscape compound parents, which cost 10x the drawing time of a 100-node lab.
  function layout(d) {
    const pos = {}, boxes = {};
    const W = d.nodes.length <= 12 ? 300 : 245; // small labs: room for a trace's labels between the nodes
    let x0 = 0;
    for (const net of d.networks) {
      const members = d.nodes.filter((n) => n.role !== "router" && n.networks.includes(net.id));
      members.sort((a, b) => b.route_reflector - a.route_reflector);
      const cols = Math.max(1, Math.min(members.length, Math.ceil(Math.sqrt(members.length * 2.5))));
      const rows = Math.max(1, Math.ceil(members.length / cols));
      members.forEach((n, i) => { pos[n.name] = { x: x0 + (i % cols) * W, y: Math.floor(i / cols) * H }; });
      // from above the nodes (room for the arcs of their sessions) to below their pods
      const top = -110, bottom = (rows - 1) * H + 150, left = x0 - 120, right = x0 + (cols - 1) * W + 120;
      boxes[net.id] = { x: (left + right) / 2, y: (top + bottom) / 2, w: right - left, h: bottom - top };
      x0 += cols * W + 140;
    }
    const taken = {};
    d.nodes.filter((n) => n.role === "router").forEach((r, i) => {
      const xs = r.networks.map((id) => boxes[id] && boxes[id].x).filter((x) => x !== undefined);
      const x = Math.round(xs.length ? xs.reduce((a, b) => a + b) / xs.length : i * W);
      taken[x] = (taken[x] || 0) + 1;
      pos[r.name] = { x: x + (taken[x] - 1) * 60, y: -230 - (taken[x] - 1) * 90 };
    });
    const byNode = {};
    d.pods.forEach((p) => { (byNode[p.node] = byNode[p.node] || []).push(p); });
    d.pods.forEach((p) => {
      const at = pos[p.node], mine = byNode[p.node], k = mine.indexOf(p);
      if (at) pos["pod:" + p.name] = { x: at.x + (k - (mine.length - 1) / 2) * 95, y: at.y + 115 };
    });
    return { pos: pos, boxes: boxes };
  }

  function elements(d) {
    const { pos, boxes } = layout(d), els = [];
    const small = d.nodes.length <= 12;
    for (const net of d.networks) {
      const label = net.name + "  " + net.lan + (net.gateway ? "  (gateway " + net.gateway + ")" : "");
      const b = boxes[net.id];
      els.push({ data: { id: "net:" + net.id, label: label, w: b.w, h: b.h }, position: { x: b.x, y: b.y }, classes: "net",
        selectable: false, grabbable: false });
    }
    for (const n of d.nodes) {
      els.push({ data: { id: "n:" + n.name, name: n.name, label: nodeLabel(n) }, position: pos[n.name], classes: nodeClasses(n) });
      if (n.role === "router") {
        for (const id of n.networks) els.push({ data: { id: "l:" + n.name + ":" + id, source: "n:" + n.name, target: "net:" + id }, classes: "link" });
      }
    }
    for (const p of d.pods) {
      els.push({ data: { id: "p:" + p.name, name: p.name, label: p.name + "\n" + p.ip }, position: pos["pod:" + p.name], classes: "pod" });
      els.push({ data: { id: "v:" + p.name, source: "n:" + p.node, target: "p:" + p.name }, classes: "veth" });
    }
    for (const s of d.sessions) {
      const a = pos[s.a], b = pos[s.b];
      // sessions between nodes of one row bow above it, deeper the further apart, so they miss the boxes between
      const bend = a && b && Math.abs(a.y - b.y) < 1 ? (a.x < b.x ? -1 : 1) * (45 + Math.abs(a.x - b.x) * 0.12) : 0;
      els.push({ data: { id: "s:" + s.id, source: "n:" + s.a, target: "n:" + s.b, state: s.state, type: s.type,
        label: small ? sessionText(s) : "", bend: bend }, classes: "bgp " + stateClass(s.state) + " " + s.type });
    }
    return els;
  }
  const sessionText = (s) => (s.type === "tor" ? "eBGP ToR" : "BGP " + s.type) + (s.asn ? " AS " + s.asn : "") + " " + s.state;
  const nodeClasses = (n) => [n.role === "router" ? "router" : "node", n.route_reflector ? "rr" : "", n.state].filter(Boolean).join(" ");

  const STYLE = [
    { selector: "node", style: { label: "data(label)", "text-wrap": "wrap", "font-size": 11, "font-family": "monospace",
      "text-valign": "center", "text-halign": "center", shape: "round-rectangle", width: 180, height: 70,
      "background-color": "#f5f7fa", "border-width": 1.5, "border-color": "#37474f",
      "z-index-compare": "manual", "z-index": 10 } },
    { selector: "node.rr", style: { "border-width": 5, "border-style": "double", "background-color": "#fff8e1" } },
    { selector: "node.router", style: { shape: "round-octagon", "background-color": "#e3f2fd", width: 230, height: 76 } },
    { selector: "node.degraded", style: { "border-color": C.warn, "border-width": 3 } },
    { selector: "node.unreachable", style: { "border-color": C.bad, "border-width": 3, "border-style": "dashed" } },
    { selector: "node.pod", style: { shape: "ellipse", width: 90, height: 34, "font-size": 10, "background-color": "#e8f5e9" } },
    { selector: "node.net", style: { "text-valign": "bottom", "text-halign": "center", "text-margin-y": 6,
      "background-color": "#eceff1", "background-opacity": 0.45, "border-color": "#90a4ae", "border-width": 2,
      width: "data(w)", height: "data(h)", "font-size": 13, "font-weight": "bold", color: "#455a64",
      shape: "round-rectangle", "z-index": 0, events: "no" } },
    { selector: "node.picked", style: { "border-color": C.trace, "border-width": 4 } },
    { selector: "node:selected", style: { "border-color": C.trace, "border-width": 3, "overlay-opacity": 0 } },
    { selector: "edge", style: { width: 2, "curve-style": "straight", "font-size": 10, color: "#37474f",
      "z-index-compare": "manual", "z-index": 5,
      "text-background-color": "#fff", "text-background-opacity": 0.85, "text-background-padding": 1 } },
    { selector: "edge.bgp", style: { label: "data(label)", "line-color": C.bad, "line-style": "dashed", width: 2.5,
      "curve-style": "unbundled-bezier", "control-point-distances": "data(bend)", "control-point-weights": 0.5 } },
    { selector: "edge.bgp.Established", style: { "line-color": C.ok, "line-style": "solid", color: C.ok } },
    { selector: "edge.bgp.down", style: { color: C.bad } },
    { selector: "edge.bgp.unknown", style: { "line-color": C.unknown, "line-style": "dotted" } },
    { selector: "edge.bgp.rr", style: { width: 3 } },
    { selector: "edge.bgp.tor", style: { "target-arrow-shape": "none", "line-dash-pattern": [2, 3] } },
    { selector: "edge.veth, edge.link", style: { "line-color": "#b0bec5", width: 1.5, "curve-style": "straight" } },
    { selector: "edge.trace", style: { "line-color": C.trace, width: 5, "target-arrow-shape": "triangle",
      "target-arrow-color": C.trace, "curve-style": "unbundled-bezier", "control-point-distances": "data(bend)",
      "control-point-weights": 0.5, label: "data(label)",
      "text-wrap": "wrap", "text-max-width": 220, color: C.trace, "font-weight": "bold", "z-index": 20, opacity: 0.9 } },
  ];

  function draw(d) {
    const t0 = performance.now();
    const key = JSON.stringify([d.networks.map((n) => n.id), d.nodes.map((n) => n.name + n.networks), d.pods.map((p) => p.name + p.node), d.sessions.map((s) => s.id)]);
    data = d;
    if (!cy) {
      cy = cytoscape({ container: $("graph"), elements: elements(d), style: STYLE, layout: { name: "preset" },
        minZoom: 0.05, maxZoom: 3 });
      cy.on("tap", "node.node, node.router", (e) => { pick(e.target.data("name"), e.originalEvent && e.originalEvent.shiftKey); });
      cy.on("tap", "node.pod", (e) => pick(e.target.data("name"), true));
      cy.fit(undefined, 30);
      window.labview.drawn = performance.now(); // the first drawing, ms after navigation started (bench/view.py)
    } else if (key !== shape) {
      cy.elements().remove();
      cy.add(elements(d));
      cy.fit(undefined, 30);
    } else {
      // only what changed: a label or class set to its own value still costs cytoscape a restyle
      const set = (e, label, classes) => {
        if (e.data("label") !== label) e.data("label", label);
        if (e.classes().join(" ") !== classes) e.classes(classes);
      };
      cy.batch(() => {
        for (const n of d.nodes) {
          const picks = picked.includes(n.name) ? " picked" : "";
          set(cy.getElementById("n:" + n.name), nodeLabel(n), nodeClasses(n) + picks);
        }
        for (const s of d.sessions) {
          const e = cy.getElementById("s:" + s.id);
          if (e.data("state") !== s.state) e.data("state", s.state);
          set(e, d.nodes.length <= 12 ? sessionText(s) : "", ["bgp", stateClass(s.state), s.type].join(" "));
        }
      });
    }
    shape = key;
    tables(d);
    status(d);
    window.labview.draws = (window.labview.draws || []).concat([performance.now() - t0]).slice(-20); // bench/view.py
  }

  function status(d) {
    const est = d.sessions.filter((s) => s.state === "Established").length;
    const when = new Date(d.time * 1000).toLocaleTimeString();
    const lab = d.lab.name + " (" + d.lab.provider + ", " + d.lab.encapsulation + ", BGP " + d.lab.bgp + ")";
    let text = lab + " · " + est + "/" + d.sessions.length + " sessions Established · ";
    text += LIVE ? "read " + when + " in " + d.took + " s" : "exported " + when + " (static, no updates)";
    if (d.error) text += " · " + d.error;
    $("status").textContent = text;
    $("status").className = d.error ? "error" : "";
    $("title").textContent = "labctl view: " + d.lab.name;
  }

  let tablesKey = "";
  function tables(d) {
    const key = JSON.stringify([d.nodes, d.sessions]);
    if (key === tablesKey) return;
    tablesKey = key;
    const rows = d.nodes.map((n) => h("tr", { "data-node": n.name, class: n.state },
      h("td", {}, (n.route_reflector ? "RR " : "") + n.name), h("td", {}, n.role), h("td", { class: "mono" }, shown(n.physical_ip)),
      h("td", { class: "mono" }, shown(n.tunnel_device)), h("td", { class: "mono" }, shown(n.tunnel_ip)),
      h("td", { class: "mono" }, labelsText(n.labels) || "-"), h("td", {}, shown(n.bgp.established) + "/" + n.bgp.expected)));
    $("nodes").tBodies[0].replaceChildren(...rows);
    const srows = d.sessions.map((s) => h("tr", { "data-session": s.id, "data-state": s.state },
      h("td", {}, s.a + " – " + s.b), h("td", {}, s.type + (s.asn ? " AS " + s.asn : "")),
      h("td", { class: "state " + stateClass(s.state) }, s.state)));
    $("sessions").tBodies[0].replaceChildren(...srows);
  }

  function pick(name, forTrace) {
    if (!forTrace) { showNode(name); return; }
    picked = picked.filter((x) => x !== name).concat([name]).slice(-2);
    cy.nodes().removeClass("picked");
    picked.forEach((x) => cy.getElementById(nodeId(x)).addClass("picked"));
    $("picked").replaceChildren(h("p", {}, picked.length === 1 ? "trace from " + picked[0] + ": click the destination pod"
      : "trace " + picked[0] + " → " + picked[1]));
    if (picked.length === 2) runTrace(picked[0], picked[1]);
  }

  function table(head, body) {
    return h("table", {}, h("thead", {}, h("tr", {}, head.map((x) => h("th", {}, x)))),
      h("tbody", {}, body.map((r) => h("tr", {}, r.map((x) => h("td", { class: "mono" }, x))))));
  }

  function showNode(name) {
    const n = data.nodes.find((x) => x.name === name);
    const box = $("detail");
    box.replaceChildren(h("h2", {}, name), h("p", {}, "loading…"));
    if (!LIVE) { nodeDetail(box, n, null); return; }
    api("api/node?name=" + encodeURIComponent(name)).then((d) => nodeDetail(box, n, d))
      .catch((e) => box.replaceChildren(h("h2", {}, name), h("p", { class: "err" }, String(e.message || e))));
  }

  function nodeDetail(box, n, d) {
    const kids = [h("h2", { id: "detail-name" }, n.name + " (" + n.role + ")"),
      h("p", { class: "mono" }, shown(n.interface) + " " + shown(n.physical_ip) + "  ·  " + shown(n.tunnel_device) + " " + shown(n.tunnel_ip)),
      h("h3", {}, "Labels"), h("p", { class: "mono", id: "detail-labels" }, labelsText(n.labels) || "-")];
    if (!d) {
      kids.push(h("h3", {}, "BGP sessions"), table(["session", "state", "since", "info"], n.sessions.map((s) => [s.name, s.state, s.since, s.info])));
      kids.push(h("p", { class: "why" }, "Routes and learned routes are read live: run `labctl view`."));
      box.replaceChildren(...kids);
      return;
    }
    if (d.error) kids.push(h("p", { class: "err" }, d.error));
    kids.push(h("h3", {}, "Routes (ip route) and who programmed them"),
      table(["route", "programmed by"], d.routes.map((r) => [r.route, r.by])));
    const b = d.bgp;
    if (b.error) kids.push(h("p", { class: "err" }, "BGP: " + b.error));
    kids.push(h("h3", {}, "BGP sessions"), table(["session", "peer", "type", "state", "info"],
      b.sessions.map((s) => [s.name, (s.peer_node || "") + " " + (s.peer_address || ""), s.type, s.state, s.info])));
    kids.push(h("h3", {}, "Learned routes"), table(["prefix", "BGP next hop", "from", "best", "kernel route"],
      b.routes.map((r) => [r.prefix, r.next_hop, r.peer_node || r.protocol, r.primary ? "*" : "", r.kernel || "-"])));
    if (b.own_block) kids.push(h("p", { class: "mono" }, "own block " + b.own_block.prefix + ": " + b.own_block.kind + " from " + b.own_block.protocol + ", announced to peers"));
    box.replaceChildren(...kids);
  }

  // the trace's hops grouped into moves between places, each labelled with how it travels
  function segments(hops) {
    const segs = [];
    let cur = hops[0].at, via = [hops[0]], tunnel = null;
    for (const hop of hops.slice(1)) {
      if (hop.at === cur) { via.push(hop); continue; }
      const enc = via.find((x) => x.kind === "encap");
      if (enc) {
        const route = via.find((x) => x.kind === "route" && x.get);
        const dev = route ? route.get.dev : "";
        tunnel = enc.encapsulation + " tunnel" + (dev ? " " + dev : "") + (enc.vni != null ? " VNI " + enc.vni : "") +
          (enc.outer_src ? "\nouter " + enc.outer_src + " → " + enc.outer_dst : "");
      }
      let how = tunnel ? "encapsulated: " + tunnel : "native, unencapsulated";
      let short = how;
      if (!tunnel && (hop.kind === "veth" || hop.kind === "deliver")) {
        how = "native, veth " + (hop.device || "");
        short = "veth";
      }
      segs.push({ from: cur, to: hop.at, how: how, short: short, encapsulated: !!tunnel });
      if (hop.kind === "decap") tunnel = null;
      cur = hop.at;
      via = [hop];
    }
    return segs;
  }

  function drawTrace(r) {
    cy.remove(".trace");
    const segs = segments(r.hops);
    segs.forEach((s, i) => {
      const a = cy.getElementById(nodeId(s.from)), b = cy.getElementById(nodeId(s.to));
      if (a.empty() || b.empty()) return;
      // between two nodes the path dips under them, where its label has room; into and out of a pod it is straight
      const pa = a.position(), pb = b.position();
      const bend = a.hasClass("pod") || b.hasClass("pod") ? 0 : (pa.x < pb.x ? 1 : -1) * (70 + Math.abs(pa.x - pb.x) * 0.1);
      cy.add({ data: { id: "t:" + i, source: a.id(), target: b.id(), label: i + 1 + ". " + s.short, how: s.how,
        encapsulated: s.encapsulated, bend: bend }, classes: "trace" });
    });
    const box = $("trace");
    const ping = r.ping || {};
    box.replaceChildren(h("h2", {}, "trace " + r.src.name + " → " + r.dst.name),
      h("p", { class: r.reached && ping.ok ? "ok" : "err", id: "trace-result" },
        (r.reached ? "reached " + r.dst.name : "did not reach " + r.dst.name) + "; ping " + (ping.ok ? "ok" : "FAILED") + " (" + (ping.summary || "") + ")"),
      h("ol", { class: "hops" }, r.hops.map((x) => h("li", { "data-kind": x.kind }, h("b", {}, x.at), " ", x.text,
        h("div", { class: "why" }, "why: " + x.why)))));
  }

  function runTrace(src, dst) {
    if (!LIVE) { $("trace").replaceChildren(h("p", { class: "why" }, "A trace is read live: run `labctl view`.")); return; }
    if (busy) return;
    busy = true;
    $("trace").replaceChildren(h("p", {}, "tracing " + src + " → " + dst + "…"));
    api("api/trace?src=" + encodeURIComponent(src) + "&dst=" + encodeURIComponent(dst)).then(drawTrace)
      .catch((e) => $("trace").replaceChildren(h("p", { class: "err" }, String(e.message || e))))
      .finally(() => { busy = false; });
  }

  function poll() {
    api("api/state").then(draw).catch((e) => {
      $("status").textContent = "cannot read the lab: " + (e.message || e);
      $("status").className = "error";
    }).finally(() => setTimeout(poll, POLL_MS));
  }

  window.labview = { cy: () => cy, data: () => data, pick: pick, showNode: showNode, segments: segments };
  if (LIVE) poll(); else draw(JSON.parse(inline.textContent));
})();
