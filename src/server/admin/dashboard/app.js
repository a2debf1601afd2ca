// floodgate dashboard: renders /dashboard/data (inlined on first load, then
// polled every 2 s) into plain DOM and hand-drawn SVG. Request values
// (descriptor values) are only ever set as text, never parsed as HTML.
"use strict";
(function () {
  var POLL_MS = 2000;
  // The history's resolution in seconds: ?step=S in the page's address.
  var STEP = Math.min(60, Math.max(1, parseInt(new URLSearchParams(location.search).get("step"), 10) || 5));
  var SVG = "http://www.w3.org/2000/svg";
  var COLORS = { ok: "#2f6fde", over: "#d1242f", near: "#c27c00", p50: "#2f6fde", p90: "#8250df", p99: "#d1242f", counters: "#1f8a4c" };

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svgEl(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    if (attrs) for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function fmtRate(v) {
    if (v === null || v === undefined || isNaN(v)) return "–";
    if (v === 0) return "0";
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
    if (v >= 100) return v.toFixed(0);
    if (v >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }
  function fmtCount(v) {
    if (v === null || v === undefined) return "–";
    return Number(v).toLocaleString("en-US");
  }
  function fmtPct(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "0%";
    if (v < 0.001) return "<0.1%";
    return (v * 100).toFixed(v < 0.1 ? 1 : 0) + "%";
  }
  function fmtSeconds(s) {
    if (s === null || s === undefined) return "–";
    if (s === 0) return "0";
    if (s < 1e-3) return (s * 1e6).toFixed(s < 1e-5 ? 1 : 0) + " µs";
    if (s < 1) return (s * 1e3).toFixed(s < 1e-2 ? 2 : 1) + " ms";
    return s.toFixed(2) + " s";
  }
  // Three latencies, the unit written once when they share it.
  function fmtTriple(values) {
    var texts = values.map(fmtSeconds);
    var units = texts.map(function (t) { return t.split(" ")[1]; });
    if (units[0] && units[0] === units[1] && units[1] === units[2]) {
      return texts.map(function (t) { return t.split(" ")[0]; }).join(" · ") + " " + units[0];
    }
    return texts.join(" · ");
  }
  function fmtDuration(s) {
    if (s < 60) return Math.ceil(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.round((s % 86400) / 3600) + " h";
  }
  function fmtClock(unix) {
    if (!unix) return "–";
    var d = new Date(unix * 1000);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }

  // Per-second rates of a count series over the history's intervals.
  function rates(counts, seconds) {
    var out = [];
    for (var i = 0; i < counts.length; i++) out.push(seconds[i] > 0 ? counts[i] / seconds[i] : null);
    return out;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  // A time-series line chart into `svg` (its viewBox gives the size).
  // series: [{name, color, values}], t: start of each point (Unix seconds).
  function lineChart(svg, t, series, opts) {
    clear(svg);
    var box = svg.viewBox.baseVal;
    var W = box.width, H = box.height;
    var left = opts.left || 52, right = 8, top = 8, bottom = opts.axis === false ? 6 : 22;
    var end = opts.end, span = opts.span, start = end - span;
    var max = 0, points = 0;
    series.forEach(function (s) {
      s.values.forEach(function (v) { if (v !== null && v > max) max = v; });
    });
    max = niceMax(max * 1.05);
    var x = function (ts) { return left + (W - left - right) * (ts - start) / span; };
    var y = function (v) { return top + (H - top - bottom) * (1 - v / max); };
    var ticks = opts.ticks || 4;
    for (var i = 0; i <= ticks; i++) {
      var v = max * i / ticks, yy = y(v);
      svg.appendChild(svgEl("line", { "class": i === 0 ? "axis" : "grid", x1: left, x2: W - right, y1: yy, y2: yy }));
      svg.appendChild(svgEl("text", { x: left - 6, y: yy + 4, "text-anchor": "end" }, opts.format(v)));
    }
    if (opts.axis !== false) {
      var every = [10, 15, 30, 60, 120, 300].filter(function (s) { return span / s <= 6; })[0] || 300;
      for (var ago = 0; ago <= span; ago += every) {
        var tx = x(end - ago);
        svg.appendChild(svgEl("text", { x: tx, y: H - 6, "text-anchor": ago === 0 ? "end" : "middle" },
          ago === 0 ? "now" : "−" + (ago < 60 ? ago + " s" : (ago / 60) + " min")));
      }
    }
    var drawn = 0;
    series.forEach(function (s) {
      var coords = [];
      for (var i = 0; i < t.length; i++) {
        var v = s.values[i];
        if (v === null || v === undefined || t[i] < start) continue;
        coords.push(x(Math.min(t[i] + opts.step, end)).toFixed(1) + "," + y(v).toFixed(1));
      }
      var latest = last(s.values), peak = 0;
      s.values.forEach(function (v) { if (v !== null && v > peak) peak = v; });
      if (coords.length && s.fill) {
        var firstXY = coords[0].split(","), lastXY = coords[coords.length - 1].split(",");
        svg.appendChild(svgEl("polygon", { "class": "area", fill: s.color,
          points: firstXY[0] + "," + y(0) + " " + coords.join(" ") + " " + lastXY[0] + "," + y(0) }));
      }
      var line = svgEl("polyline", { points: coords.join(" "), stroke: s.color,
        "data-series": s.name, "data-points": coords.length, "data-latest": latest === null ? "" : latest, "data-max": peak });
      svg.appendChild(line);
      points = Math.max(points, coords.length);
      if (coords.length) drawn++;
    });
    if (!drawn) {
      svg.appendChild(svgEl("text", { "class": "nodata", x: (left + W) / 2, y: H / 2, "text-anchor": "middle" },
        "no data yet: the first sample comes after a second"));
    }
    svg.setAttribute("data-points", points);
    svg.setAttribute("data-series-count", drawn);
  }

  function legend(node, items) {
    clear(node);
    items.forEach(function (it) {
      var span = el("span", { "class": "item" });
      var sw = el("span", { "class": "swatch" });
      sw.style.background = it.color;
      span.appendChild(sw);
      span.appendChild(document.createTextNode(it.label + " " + it.value));
      node.appendChild(span);
    });
  }

  function last(values) {
    for (var i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return values[i];
    return null;
  }

  function sparkline(values, over, step) {
    var svg = svgEl("svg", { "class": "spark", viewBox: "0 0 140 26", preserveAspectRatio: "none" });
    var max = 0;
    values.concat(over).forEach(function (v) { if (v > max) max = v; });
    if (max === 0) max = 1;
    [[values, COLORS.ok, "hits"], [over, COLORS.over, "over"]].forEach(function (pair) {
      var vals = pair[0], coords = [];
      var n = Math.max(vals.length, 2);
      for (var i = 0; i < vals.length; i++) {
        coords.push((140 * i / (n - 1)).toFixed(1) + "," + (24 - 22 * vals[i] / max).toFixed(1));
      }
      svg.appendChild(svgEl("polyline", { points: coords.join(" "), stroke: pair[1], "data-series": pair[2], "data-points": coords.length }));
    });
    return svg;
  }

  function renderHeader(d) {
    var serving = $("serving");
    serving.textContent = d.serving ? "Serving" : "Not serving";
    serving.className = "pill " + (d.serving ? "good" : "bad");
    var store = $("store-pill");
    store.textContent = d.store.reachable ? "Store reachable" : "Store unreachable";
    store.className = "pill " + (d.store.reachable ? "good" : "bad");
    var cfg = $("config-pill"), c = d.config, x = c.xds;
    var version = c.version ? c.version.slice(0, 8) : "no version";
    if (x) {
      // Rules pushed by an xDS server: its version, and what became of the last push.
      cfg.textContent = "xDS " + (x.accepted_version || "no config yet") + " · " + c.rules + " rules" +
        (c.last_outcome === "failure" ? " · NACKed " + (x.rejected_version || "") : "") +
        (x.connected ? "" : " · disconnected");
      cfg.className = "pill " + (c.last_outcome === "failure" || !x.connected ? "bad" : "");
      cfg.title = "server " + x.server + " (node " + x.node_id + "), " + x.acks + " ACKs, " +
        x.nacks + " NACKs, " + x.stream_failures + " stream failures" +
        (x.last_stream_error ? "; last: " + x.last_stream_error : "");
    } else {
      cfg.textContent = "Config " + version + " · " + c.rules + " rules" +
        (c.last_outcome === "failure" ? " · reload failed" : "");
      cfg.className = "pill " + (c.last_outcome === "failure" ? "bad" : "");
      cfg.title = c.version ? "version " + c.version + ", loaded " + fmtClock(c.loaded_unix_seconds) : "";
    }
    $("updated").textContent = "updated " + fmtClock(d.generated_unix_seconds) + " · every 2 s";
    var banner = $("reload-error");
    if (c.last_outcome === "failure") {
      banner.classList.remove("hidden");
      $("reload-error-text").textContent = (c.last_error || "unknown error") +
        "\n(at " + fmtClock(c.last_attempt_unix_seconds) + ", trigger: " + (c.last_trigger || "?") + ")";
    } else {
      banner.classList.add("hidden");
    }
    document.querySelectorAll(".window").forEach(function (n) { n.textContent = d.window_seconds; });
  }

  function renderKpis(d) {
    var r = d.requests.per_second;
    var total = r.ok + r.over_limit + r.invalid + r.error;
    $("kpi-rps").textContent = fmtRate(total) + "/s";
    $("kpi-rps-hint").textContent = fmtRate(r.ok) + "/s OK · " + fmtCount(d.requests.totals.ok + d.requests.totals.over_limit) + " total";
    $("kpi-over").textContent = fmtRate(r.over_limit) + "/s";
    $("kpi-over-hint").textContent = fmtPct(total > 0 ? r.over_limit / total : null) + " of requests · " + fmtCount(d.requests.totals.over_limit) + " total";
    var near = 0, hits = 0;
    d.rules.forEach(function (rule) { near += rule.per_second.near_limit; hits += rule.per_second.hits; });
    $("kpi-near").textContent = fmtRate(near) + "/s";
    $("kpi-near-hint").textContent = fmtPct(hits > 0 ? near / hits : null) + " of rule hits";
    var l = d.latency;
    $("kpi-latency").textContent = fmtTriple([l.p50_seconds, l.p90_seconds, l.p99_seconds]);
    $("kpi-latency-hint").textContent = fmtCount(l.count) + " decisions in " + d.window_seconds + " s";
    // null: the store does not track its counters (Redis; see its key count).
    var tracked = d.store.counters !== null;
    $("kpi-counters").textContent = tracked ? fmtCount(d.store.counters) : "not tracked";
    $("kpi-counters-hint").textContent = tracked ? fmtCount(d.store.evictions_total) + " evicted" : "counters live in Redis";
    $("kpi-errors").textContent = fmtCount(d.store.errors_total);
    $("kpi-errors-hint").textContent = fmtRate(r.error) + "/s now · " + fmtCount(d.requests.totals.invalid) + " invalid requests";
  }

  function renderCharts(d) {
    var h = d.history, end = d.generated_unix_seconds, step = d.step_seconds;
    // The x axis covers what history there is: at least a minute, at most all.
    var span = h.t.length ? end - h.t[0] : 60;
    span = Math.min(d.history_seconds, Math.max(60, Math.ceil(span / 60) * 60));
    var ok = rates(h.ok, h.seconds), over = rates(h.over_limit, h.seconds);
    lineChart($("chart-requests"), h.t, [
      { name: "ok", color: COLORS.ok, values: ok, fill: true },
      { name: "over_limit", color: COLORS.over, values: over, fill: true }
    ], { end: end, span: span, step: step, format: function (v) { return fmtRate(v) + "/s"; } });
    legend($("legend-requests"), [
      { color: COLORS.ok, label: "OK", value: fmtRate(last(ok)) + "/s" },
      { color: COLORS.over, label: "OVER_LIMIT", value: fmtRate(last(over)) + "/s" }
    ]);
    lineChart($("chart-latency"), h.t, [
      { name: "p50", color: COLORS.p50, values: h.p50_seconds },
      { name: "p90", color: COLORS.p90, values: h.p90_seconds },
      { name: "p99", color: COLORS.p99, values: h.p99_seconds }
    ], { end: end, span: span, step: step, left: 60, format: fmtSeconds });
    legend($("legend-latency"), [
      { color: COLORS.p50, label: "p50", value: fmtSeconds(last(h.p50_seconds)) },
      { color: COLORS.p90, label: "p90", value: fmtSeconds(last(h.p90_seconds)) },
      { color: COLORS.p99, label: "p99", value: fmtSeconds(last(h.p99_seconds)) }
    ]);
    lineChart($("chart-counters"), h.t, [
      { name: "counters", color: COLORS.counters, fill: true,
        values: d.store.counters === null ? h.counters.map(function () { return null; }) : h.counters }
    ], { end: end, span: span, step: step, ticks: 2, axis: false, format: function (v) { return fmtCount(Math.round(v)); } });
  }

  function bar(kind, share) {
    var wrap = el("span", { "class": "bar " + kind });
    var fill = el("span");
    fill.style.width = Math.min(100, Math.max(share > 0 ? 2 : 0, share * 100)) + "%";
    wrap.appendChild(fill);
    return wrap;
  }

  // The domain the rules and top tables are narrowed to ("": all).
  var domain = "";
  function inDomain(item) { return domain === "" || item.domain === domain; }

  function renderDomains(d) {
    var select = $("domain-filter");
    var names = [];
    d.rules.forEach(function (rule) { if (names.indexOf(rule.domain) < 0) names.push(rule.domain); });
    names.sort();
    if (domain !== "" && names.indexOf(domain) < 0) domain = "";
    clear(select);
    select.appendChild(el("option", { value: "" }, "all domains"));
    names.forEach(function (name) {
      var option = el("option", { value: name }, name);
      if (name === domain) option.selected = true;
      select.appendChild(option);
    });
  }

  function renderRules(d) {
    var body = $("rules-body");
    clear(body);
    var h = d.history;
    var rules = d.rules.filter(inDomain);
    // Rules never hit since the start are listed in one line below.
    var idle = rules.filter(function (rule) { return rule.totals.hits === 0; });
    $("idle-rules").textContent = idle.length ? "No hits yet: " + idle.map(function (rule) { return rule.rule; }).join(", ") : "";
    rules.forEach(function (rule) {
      if (rule.totals.hits === 0) return;
      var over = rule.over_limit_share || 0, near = rule.near_limit_share || 0, ps = rule.per_second;
      var cls = over > 0 ? "limiting" : (near > 0 ? "near" : (ps.hits > 0 ? "" : "idle"));
      var tr = el("tr", { "class": cls, "data-rule": rule.rule, "data-domain": rule.domain,
        "data-over-share": over, "data-hits": rule.totals.hits });
      tr.appendChild(el("td", null, rule.domain));
      var name = el("td", { "class": "rule" }, rule.rule);
      if (over > 0) name.appendChild(el("span", { "class": "status over" }, "LIMITING"));
      else if (near > 0) name.appendChild(el("span", { "class": "status near" }, "NEAR"));
      tr.appendChild(name);
      tr.appendChild(el("td", { "class": "num" }, fmtRate(ps.hits)));
      tr.appendChild(el("td", { "class": "num" }, fmtRate(ps.within_limit)));
      tr.appendChild(el("td", { "class": "num" }, fmtRate(ps.over_limit)));
      var shareCell = el("td");
      shareCell.appendChild(bar("over", over));
      shareCell.appendChild(el("span", { "class": "pct" }, fmtPct(rule.over_limit_share)));
      tr.appendChild(shareCell);
      tr.appendChild(el("td", { "class": "num" }, fmtRate(ps.near_limit)));
      tr.appendChild(el("td", { "class": "num" }, fmtPct(rule.near_limit_share)));
      var spark = el("td");
      var series = h.rules[rule.rule];
      if (series) spark.appendChild(sparkline(rates(series.hits, h.seconds), rates(series.over_limit, h.seconds)));
      tr.appendChild(spark);
      tr.appendChild(el("td", { "class": "num" }, fmtCount(rule.totals.hits)));
      tr.appendChild(el("td", { "class": "num" }, fmtCount(rule.totals.over_limit)));
      body.appendChild(tr);
    });
  }

  function renderTop(d) {
    var body = $("top-body");
    clear(body);
    $("top-capacity").textContent = d.top.capacity;
    var entries = d.top.entries.filter(inDomain);
    $("top-empty").classList.toggle("hidden", entries.length > 0);
    entries.forEach(function (e) {
      var text = e.entries.map(function (x) { return x.key + "=" + x.value; }).join(",");
      var kind = e.over_limit || e.usage_ratio >= 1 ? "over" : (e.usage_ratio >= 0.8 ? "near" : "ok");
      var tr = el("tr", { "class": kind === "over" ? "limiting" : (kind === "near" ? "near" : ""),
        "data-descriptor": text, "data-ratio": e.usage_ratio, "data-rule": e.rule });
      var desc = el("td");
      e.entries.forEach(function (x) {
        var chip = el("span", { "class": "chip", title: x.key + "=" + x.value });
        chip.appendChild(el("b", null, x.key + "="));
        chip.appendChild(document.createTextNode(x.value));
        desc.appendChild(chip);
      });
      if (kind === "over") desc.appendChild(el("span", { "class": "status over" }, "OVER LIMIT"));
      tr.appendChild(desc);
      tr.appendChild(el("td", { "class": "rule" }, e.rule));
      var usage = el("td");
      usage.appendChild(bar(kind, Math.min(1, e.usage_ratio)));
      usage.appendChild(el("span", { "class": "pct" }, fmtPct(e.usage_ratio)));
      tr.appendChild(usage);
      tr.appendChild(el("td", { "class": "num" }, fmtCount(e.used) + " / " + fmtCount(e.limit)));
      tr.appendChild(el("td", { "class": "num" }, fmtCount(e.remaining)));
      tr.appendChild(el("td", { "class": "num" }, fmtDuration(e.reset_after_seconds)));
      body.appendChild(tr);
    });
  }

  function renderOverrides(d) {
    var body = $("overrides-body");
    clear(body);
    var o = d.overrides || { total: 0, entries: [] };
    $("overrides-total").textContent = o.total;
    var entries = o.entries.filter(inDomain);
    $("overrides-empty").classList.toggle("hidden", entries.length > 0);
    entries.forEach(function (e) {
      var tr = el("tr");
      var desc = el("td");
      desc.appendChild(el("span", { "class": "chip" }, e.domain));
      e.entries.forEach(function (x) {
        var chip = el("span", { "class": "chip", title: x.key + "=" + x.value });
        chip.appendChild(el("b", null, x.key + "="));
        chip.appendChild(document.createTextNode(x.value));
        desc.appendChild(chip);
      });
      tr.appendChild(desc);
      tr.appendChild(el("td", null, e.limits.map(function (l) {
        return (l.name ? l.name + ": " : "") + fmtCount(l.requests_per_unit) + "/" +
          (l.unit_multiplier && l.unit_multiplier > 1 ? l.unit_multiplier + " " : "") + l.unit +
          (l.algorithm ? " " + l.algorithm : "") + (l.calendar ? " calendar " + (l.time_zone || "UTC") : "");
      }).join(" · ")));
      tr.appendChild(el("td", { "class": "num" }, e.expires_at ? fmtClock(e.expires_at) : "never"));
      body.appendChild(tr);
    });
  }

  function renderFacts(d) {
    var facts = $("facts");
    clear(facts);
    var c = d.config, s = d.store;
    function fact(name, value, cls) {
      facts.appendChild(el("dt", null, name));
      facts.appendChild(el("dd", cls ? { "class": cls } : null, value));
    }
    fact("Store", s.reachable ? "reachable" : "UNREACHABLE", s.reachable ? "good" : "bad");
    fact("Store errors", fmtCount(s.errors_total), s.errors_total > 0 ? "bad" : null);
    fact("Counters held", s.counters === null ? "not tracked (Redis)" : fmtCount(s.counters) + " (" + fmtCount(s.evictions_total) + " evicted)");
    fact("Config version", c.version || "–");
    if (c.xds) {
      fact("xDS server", c.xds.server + (c.xds.connected ? " (connected)" : " (disconnected)"),
        c.xds.connected ? "good" : "bad");
      fact("xDS version", (c.xds.accepted_version || "–") + " · " + fmtCount(c.xds.acks) + " ACK · " +
        fmtCount(c.xds.nacks) + " NACK", c.xds.last_nack_error ? "bad" : null);
    }
    fact("Loaded at", fmtClock(c.loaded_unix_seconds) + " · " + c.rules + " rules");
    fact("Last reload", (c.last_outcome || "–") + (c.last_trigger ? " (" + c.last_trigger + ", " + fmtClock(c.last_attempt_unix_seconds) + ")" : ""),
      c.last_outcome === "failure" ? "bad" : (c.last_outcome === "success" ? "good" : null));
    fact("Reloads", fmtCount(c.successes) + " ok · " + fmtCount(c.failures) + " failed");
    fact("Up since", fmtClock(d.started_unix_seconds) + " (" + fmtDuration(d.generated_unix_seconds - d.started_unix_seconds) + ")");
  }

  // The cards whose content is wider than they are (their ids, or their
  // first heading), for the browser test: nothing may overflow sideways.
  function overflowing() {
    var wide = [];
    Array.prototype.forEach.call(document.querySelectorAll(".card"), function (card) {
      if (card.scrollWidth > card.clientWidth + 1) {
        var title = card.querySelector("h2, .title");
        wide.push(title ? title.firstChild.textContent.trim() : "card");
      }
    });
    if (document.documentElement.scrollWidth > document.documentElement.clientWidth + 1) wide.push("page");
    return wide.join(",");
  }

  var renders = 0;
  function render(d, source) {
    try {
      draw(d, source);
      document.body.removeAttribute("data-error");
    } catch (e) {
      // Shown to the operator, and to the browser test.
      document.body.setAttribute("data-error", String(e && e.stack || e));
      $("updated").textContent = "render failed: " + e;
    }
  }
  function draw(d, source) {
    latest = d;
    renderHeader(d);
    renderKpis(d);
    renderCharts(d);
    renderDomains(d);
    renderRules(d);
    renderTop(d);
    renderOverrides(d);
    renderFacts(d);
    renders++;
    document.body.setAttribute("data-overflow", overflowing());
    document.body.setAttribute("data-renders", renders);
    document.body.setAttribute("data-source", source);
    document.body.setAttribute("data-generated", d.generated_unix_seconds);
  }

  var latest = null;
  $("domain-filter").addEventListener("change", function (event) {
    domain = event.target.value;
    if (latest) { renderRules(latest); renderTop(latest); }
  });

  var polls = 0;
  function poll() {
    fetch("/dashboard/data?step=" + STEP, { cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (d) {
        polls++;
        document.body.setAttribute("data-polls", polls);
        render(d, "poll");
      })
      .catch(function (e) {
        var pill = $("updated");
        pill.textContent = "connection lost (" + e.message + "), retrying";
        pill.className = "pill bad";
      })
      .then(function () { setTimeout(poll, POLL_MS); });
  }

  try {
    var initial = JSON.parse($("initial-data").textContent);
    render(initial, "inline");
  } catch (e) {
    $("updated").textContent = "waiting for data";
  }
  setTimeout(poll, POLL_MS);
})();
