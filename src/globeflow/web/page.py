"""The single page of the web app: an upload form and result cards, vanilla JS, no external resources."""

from __future__ import annotations

import html
import json


def render_page(*, model_id: str, modality: str, config) -> str:
    """The page for a model of the given modality (``image`` or ``text``)."""
    limits = {"max_files": config.max_files, "max_file_mb": config.max_file_mb, "modality": modality}
    if modality == "text":
        field = ('<label>Texts, one per line<br><textarea id="texts" rows="4" cols="70" '
                 'placeholder="Sunset over the harbour, ferries to the islands"></textarea></label>')
    else:
        field = ('<label>Photos (up to {n}, {mb:g} MB each)<br>'
                 '<input id="files" type="file" accept="image/*" multiple></label>').format(
                     n=config.max_files, mb=config.max_file_mb)
    return _PAGE.replace("@MODEL@", html.escape(model_id)).replace("@FIELD@", field).replace(
        "@SAMPLES@", str(config.num_samples or config.model_samples)).replace("@LIMITS@", json.dumps(limits))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>globeflow — where on Earth?</title>
<style>
body{margin:0;font:15px system-ui,sans-serif;color:#222;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:12px 20px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;opacity:.8;font-size:13px}
main{max-width:1000px;margin:0 auto;padding:16px}
form{background:#fff;border:1px solid #ddd;border-radius:6px;padding:14px;display:flex;flex-wrap:wrap;gap:14px;align-items:flex-end}
form input[type=number]{width:90px}
button{font:inherit;padding:6px 16px;background:#1d3557;color:#fff;border:0;border-radius:4px;cursor:pointer}
button:disabled{opacity:.5}
#status{margin:10px 2px;color:#555;min-height:1.2em}
.result{background:#fff;border:1px solid #ddd;border-radius:6px;margin:14px 0;padding:12px}
.result h2{font-size:16px;margin:0 0 8px;display:flex;gap:10px;align-items:center}
.result h2 img{height:56px;border-radius:3px}
.result iframe{width:100%;height:560px;border:0}
.facts{display:flex;flex-wrap:wrap;gap:24px;margin-top:6px}
.facts table{border-collapse:collapse;font-size:14px}
.facts td,.facts th{padding:2px 8px;text-align:left;border-bottom:1px solid #eee}
.bar{display:inline-block;height:10px;background:#e4572e;vertical-align:middle;margin-right:6px}
.error{border-color:#e4572e;color:#9b1d20}
.best-guess{font-size:16px}
</style></head><body>
<header><h1>globeflow — where on Earth was this taken?</h1>
<p>Model <b>@MODEL@</b>. A probability map, not a single pin: the coloured area holds the likely places.
Photos are processed in memory and not stored; their EXIF GPS tags are ignored.</p></header>
<main>
<form id="form">
@FIELD@
<label>Samples<br><input id="num_samples" type="number" min="16" max="4096" placeholder="@SAMPLES@"></label>
<label>Seed<br><input id="seed" type="number" min="0" placeholder="random"></label>
<button id="submit" type="submit">Locate</button>
</form>
<div id="status"></div>
<div id="results"></div>
</main>
<script>
(function(){
  "use strict";
  var LIMITS=@LIMITS@;
  var form=document.getElementById("form"), status=document.getElementById("status"), out=document.getElementById("results");
  function el(tag, attrs, text){var e=document.createElement(tag);for(var k in (attrs||{}))e.setAttribute(k,attrs[k]);if(text!==undefined)e.textContent=text;return e;}
  function ll(lat,lon){return Math.abs(lat).toFixed(3)+"\\u00b0"+(lat>=0?"N":"S")+", "+Math.abs(lon).toFixed(3)+"\\u00b0"+(lon>=0?"E":"W");}
  function km(x){return Math.round(x).toLocaleString("en")+" km";}
  function card(r, thumb){
    var c=el("section",{"class":"result"+(r.error?" error":"")});
    var h=el("h2");
    if(thumb){h.appendChild(el("img",{src:thumb,alt:""}));}
    h.appendChild(el("span",{},r.input));
    c.appendChild(h);
    if(r.error){c.appendChild(el("p",{"class":"error-reason"},"Could not use this input: "+r.error));return c;}
    var f=el("iframe",{title:"map of "+r.input,sandbox:"allow-scripts"});
    f.srcdoc=r.map_html; c.appendChild(f);
    var facts=el("div",{"class":"facts"});
    var left=el("div");
    var bg=r.best_guess, d=r.distribution;
    left.appendChild(el("div",{"class":"best-guess"},"Best guess: "+ll(bg.lat,bg.lon)+(bg.country?" (in "+bg.country+")":"")));
    left.appendChild(el("div",{"class":"guess-how"},"Picked as the "+bg.how+"."));
    var top=Object.keys(r.country_probs)[0];
    if(top){left.appendChild(el("div",{"class":"top-country"},"Most probable country: "+top+", "+(100*r.country_probs[top]).toFixed(0)+
      " % of the samples"+(top===bg.country?"":" (not the best guess's country)")));}
    left.appendChild(el("div",{"class":"distribution"},"Regions, modes, countries and localizability: the same "+d.num_samples+
      " samples"+(d.cfg===null||d.cfg===undefined?"":" at guidance w = "+d.cfg)+"."));
    var reg=r.credible_regions;
    left.appendChild(el("div",{"class":"radii"},"50 % region: "+km(reg[0].radius_km)+" radius, 90 %: "+km(reg[1].radius_km)));
    left.appendChild(el("div",{},"Localizability: "+r.localizability.toFixed(2)+" nats/sr (uniform = -2.53)"));
    facts.appendChild(left);
    var mt=el("table",{"class":"modes"}); var hr=el("tr");
    ["#","mode","mass","50 % radius","country"].forEach(function(t){hr.appendChild(el("th",{},t));}); mt.appendChild(hr);
    r.modes.forEach(function(m,i){var tr=el("tr");
      [String(i+1),ll(m.lat,m.lon),(100*m.mass).toFixed(1)+" %",km(m.radius_km),m.country].forEach(function(t){tr.appendChild(el("td",{},t));});
      mt.appendChild(tr);});
    facts.appendChild(mt);
    var ct=el("table",{"class":"countries"}); ct.appendChild(el("tr")).appendChild(el("th",{colspan:"2"},"Country (share of the samples)"));
    Object.keys(r.country_probs).slice(0,6).forEach(function(cc){var p=r.country_probs[cc];var tr=el("tr");
      tr.appendChild(el("td",{},cc)); var td=el("td"); var b=el("span",{"class":"bar"}); b.style.width=Math.max(2,Math.round(120*p))+"px";
      td.appendChild(b); td.appendChild(document.createTextNode((100*p).toFixed(1)+" %")); tr.appendChild(td); ct.appendChild(tr);});
    facts.appendChild(ct);
    c.appendChild(facts);
    return c;
  }
  form.addEventListener("submit", function(ev){
    ev.preventDefault();
    var data=new FormData(), thumbs={};
    if(LIMITS.modality==="text"){
      document.getElementById("texts").value.split("\\n").filter(function(t){return t.trim();}).forEach(function(t){data.append("text",t);});
    } else {
      var files=document.getElementById("files").files;
      if(!files.length){status.textContent="Choose one or more photos first.";return;}
      if(files.length>LIMITS.max_files){status.textContent="At most "+LIMITS.max_files+" photos at a time.";return;}
      for(var i=0;i<files.length;i++){data.append("files",files[i],files[i].name);thumbs[files[i].name]=URL.createObjectURL(files[i]);}
    }
    data.append("num_samples",document.getElementById("num_samples").value);
    data.append("seed",document.getElementById("seed").value);
    data.append("map","html");
    var button=document.getElementById("submit"); button.disabled=true;
    status.textContent="Locating\\u2026"; out.innerHTML="";
    fetch("api/predict",{method:"POST",body:data}).then(function(resp){
      return resp.json().then(function(body){return {resp:resp,body:body};});
    }).then(function(x){
      if(x.resp.status===503){status.textContent="The server is busy; retry in "+x.resp.headers.get("Retry-After")+" s.";return;}
      (x.body.results||[]).forEach(function(r){out.appendChild(card(r,thumbs[r.input]));});
      status.textContent=x.resp.ok?("Done in "+x.body.elapsed_s+" s."):("Error: "+x.body.error);
      status.setAttribute("data-done","1");
    }).catch(function(err){status.textContent="Request failed: "+err;}).finally(function(){button.disabled=false;});
  });
})();
</script>
</body></html>
"""
