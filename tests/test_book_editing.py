"""Chapter 5's helpers (bdia.apps.book.editing and edit_cost): the named experiment, the data, and the sentences
the chapter prints, checked on tables whose verdicts are known."""

import math

import pandas as pd
import pytest
import torch

import bdia
from bdia.apps.book import edit_cost, editing, photos, wording

pytest.importorskip("diffusers")


def test_the_published_first_step_drops_eps_and_nothing_else():
    from conftest import make_mixture

    schedule = bdia.VPSchedule.ddpm()
    mixture = make_mixture(4)
    x0 = mixture.sample(16)
    ones = lambda z, t: torch.ones_like(z)  # noqa: E731  eps = 1: adding sigma is adding sigma * eps
    ours = bdia.invert(ones, x0, schedule, 10, "bdia", gamma=0.96, strength=0.8)
    theirs = editing.invert_with_published_first_step(ones, x0, schedule, 10, 0.96, 0.8)
    for a, b in zip(ours.latents, theirs.latents):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    # with a real eps the seed differs, the round trip is still exact (the pair carries the seed), the latent is not
    model = mixture.eps_model(schedule)
    ours = bdia.invert(model, x0, schedule, 10, "bdia", gamma=0.96)
    theirs = editing.invert_with_published_first_step(model, x0, schedule, 10, 0.96)
    assert (theirs.z - ours.z).norm() > 1e-3 * ours.z.norm()
    rec = bdia.sample(model, theirs, schedule, 10, "bdia")
    assert ((rec - x0).norm() / x0.norm()).item() < 1e-12
    assert theirs.noise_stats["ratio"] > 0


def test_held_out_pairs_come_from_the_classifiers_test_split():
    from bdia.apps.digits import load_digits_images, train_test_split

    images, sources, targets = editing.held_out_pairs([(3, 8), (1, 7)], 5)
    all_images, labels = load_digits_images()
    train, _ = train_test_split(labels)
    assert images.shape == (10, 1, 8, 8)
    assert sources.tolist() == [3] * 5 + [1] * 5 and targets.tolist() == [8] * 5 + [7] * 5
    for image, label in zip(images, sources):
        matches = [i for i in range(len(all_images)) if torch.equal(all_images[i], image)]
        assert matches and all(labels[i] == label for i in matches)
        assert not set(matches) & set(train.tolist())


def test_names_say_every_method_or_group_bdia():
    universe = ["ddim", "edict", "obelm", "bdia (γ=0.9)", "bdia (γ=1)", "bdia (γ=1, lattice=True)"]
    exact = universe[1:]
    assert wording.name_methods(exact, exact) == "every exact method"
    assert wording.name_methods(universe, universe) == "every method"
    assert wording.name_methods(universe[:-1] + [], universe) == "every method but BDIA on the lattice"
    assert wording.name_methods(["bdia (γ=0.9)", "bdia (γ=1)", "obelm"]) == "BDIA at γ = 0.9 and 1 and O-BELM"
    assert wording.name_methods(["edict"], universe) == "EDICT"


def _costs(errors: dict, passes: dict, backward: dict | None = None, time: dict | None = None):
    table = pd.DataFrame({"reconstruction error": errors, "network passes": passes})
    table["of which backward"] = pd.Series(backward or {}).reindex(table.index).fillna(0)
    table["time / DDIM (committed)"] = pd.Series(time or {}, dtype=float).reindex(table.index)
    return table


def test_the_cost_verdict_follows_the_numbers():
    errors = {"ddim": 0.2, "null-text": 0.1, "edict": 5e-8, "obelm": 1e-15, "bdia (γ=1)": 5e-16,
              "bdia (γ=1, lattice=True)": 0.0}
    passes = {"ddim": 32, "null-text": 384, "edict": 64, "obelm": 31, "bdia (γ=1)": 31, "bdia (γ=1, lattice=True)": 31}
    text = edit_cost.cost_verdict(_costs(errors, passes, {"null-text": 160},
                                       {"ddim": 1.0, "bdia (γ=1)": 0.98, "edict": 2.1, "null-text": 11.0}))
    assert text.startswith("Every exact method reconstructs the digits to rounding error (worst 5e-08, and exactly 0 "
                           "on the lattice).")
    assert "BDIA and O-BELM need 31 network passes per round trip, EDICT 64" in text
    assert "a round trip takes BDIA 0.98 and EDICT 2.10 times DDIM inversion's time" in text
    assert "null-text inversion misses by 1.0e-01 with 384 passes, 160 of them backward, taking 11.0 times" in text
    # an exact method that loses its exactness is named as missing, not hidden among the others
    text = edit_cost.cost_verdict(_costs({**errors, "edict": 3e-3}, passes))
    assert "EDICT misses by 3.0e-03" in text and not text.startswith("Every exact method")


def _digits_table(success: dict, distance: dict, guidances=(1.0, 3.0)):
    rows = []
    for g in guidances:
        for method in success:
            rows.append({"method": method, "guidance": g, "edit success": success[method][g],
                         "feature distance": distance[method][g], "reconstruction error": 0.0,
                         "latent / noise level": 1.1})
    return pd.DataFrame(rows)


def test_the_edit_verdict_names_the_leaders_and_what_null_text_buys():
    success = {"ddim": {1.0: 0.9, 3.0: 1.0}, "null-text": {1.0: 0.9, 3.0: 1.0}, "edict": {1.0: 0.5, 3.0: 0.6},
               "bdia (γ=1)": {1.0: 0.9, 3.0: 0.7}, "obelm": {1.0: 0.9, 3.0: 0.7}}
    distance = {m: {1.0: 10.0, 3.0: 10.0} for m in success}
    distance["null-text"] = {1.0: 12.0, 3.0: 9.0}
    text = editing.edit_verdict(_digits_table(success, distance), "8s")
    assert "At guidance 1 the edits of every method but EDICT are read as 8s most often (90%)" in text
    assert "at guidance 3 the edits of DDIM inversion and null-text inversion are read as 8s most often (100%)" in text
    assert "read as the target more often than BDIA's (γ = 1) at guidance 3, and edits closer to their source at 3." \
        in text


def test_the_published_first_step_verdict_says_when_it_costs_little():
    def table(theirs_success):
        rows = []
        for g, ours, theirs in ((1.0, 0.9, theirs_success[0]), (3.0, 0.7, theirs_success[1])):
            rows.append({"method": "bdia (γ=0.96)", "guidance": g, "edit success": ours, "reconstruction error": 1e-15,
                         "latent / noise level": 1.1})
            rows.append({"method": wording.PUBLISHED_FIRST_STEP, "guidance": g, "edit success": theirs,
                         "reconstruction error": 2e-15, "latent / noise level": 1.3})
        return pd.DataFrame(rows)

    assert editing.published_bug_verdict(table((0.9, 0.68))).endswith("the dropped factor costs little.")
    assert editing.published_bug_verdict(table((0.6, 0.7))).endswith("moves the edits by up to 30%.")


def test_the_null_text_verdict_reports_its_best_setting():
    effort = pd.DataFrame({"Adam steps per step": [0, 10, 200], "learning rate": [None, 0.01, 0.1],
                           "early stop": [None, 1e-5, 0.0], "round-trip error": [0.12, 0.1, 0.012],
                           "backward passes": [0, 160, 3200], "forward calls": [32, 224, 3264]})
    text = editing.null_text_verdict(effort, 3.0)
    assert "reconstructs to 1.0e-01, 1.2 times better than DDIM inversion's 1.2e-01" in text
    assert "200 steps at a learning rate of 0.1 without the early stop, reaches 1.2e-02 (10 times better) with 3200" \
        in text


def test_the_photo_verdict_and_summary():
    rows = []
    for g in (1.0, 7.5):
        for method, psnr in (("ddim", 27.0 if g == 1 else 17.0), ("negative-prompt", 27.0), ("edict", math.inf),
                             ("bdia (γ=1)", math.inf)):
            rows.append({"method": method, "guidance": g, "PSNR (dB)": psnr, "SSIM": 1.0, "calls per image": 31,
                         "backward passes": 0})
    table = pd.DataFrame(rows)
    text = photos.photo_verdict(table)
    assert text.startswith("Every exact method returns the VAE's reconstruction of each photo at every guidance")
    assert "DDIM inversion reaches 27.0 dB at guidance 1 and 17.0 dB at 7.5" in text
    assert "negative-prompt inversion stays at 27.0 dB at every guidance" in text
    summary = photos.photo_summary(table)
    assert list(summary.columns[:2]) == ["PSNR, w = 1", "PSNR, w = 7.5"]


def test_the_edits_table_puts_each_number_under_its_metric_and_guidance():
    rows = [{"method": m, "guidance": g, "reconstruction error": e * g, "edit success": s / g,
             "feature distance": d + g}
            for m, e, s, d in [("ddim", 1e-2, 0.9, 10.0), ("bdia (γ=1)", 1e-16, 0.6, 12.0)] for g in (1.0, 3.0)]
    view = editing.edits_view(pd.DataFrame(rows))
    table = view.data
    assert list(table.index) == ["ddim", "bdia (γ=1)"]  # the run's order, not the alphabet
    assert table.loc["ddim", ("round-trip error", "3")] == pytest.approx(3e-2)
    assert table.loc["bdia (γ=1)", ("read as the target", "3")] == pytest.approx(0.2)
    assert table.loc["ddim", ("distance to the source", "1")] == pytest.approx(11.0)
    html = view.to_html()
    assert "3.0e-16" in html and "20%" in html and "white-space: nowrap" in html


def test_every_method_of_the_registry_has_a_colour_of_its_own():
    from bdia.apps.plotting import method_color
    from bdia.methods import METHODS

    colours = [method_color(name) for name in METHODS]
    assert len(set(colours)) == len(colours)


def test_the_frontier_verdict_picks_the_best_exact_gamma_and_compares_both_axes():
    import pandas as pd

    from bdia.apps.book import frontier

    rows = []
    for gamma, error, success, distance in [(1.0, 1e-15, 0.3, 20.0), (0.6, 1e-12, 0.75, 18.5),
                                            (0.5, 1e-11, 0.75, 18.2), (0.4, 2e-6, 0.9, 17.7)]:
        rows.append({"method": f"bdia (γ={gamma:g})", "guidance": 7.5, "gamma": gamma, "reconstruction error": error,
                     "edit success": success, "feature distance": distance})
    rows += [{"method": "bdia (γ=auto)", "guidance": 7.5, "gamma": 0.743, "reconstruction error": 1e-13,
              "edit success": 0.5, "feature distance": 19.3},
             {"method": frontier.AUTO_FLOAT64, "guidance": 7.5, "gamma": 0.274, "reconstruction error": 4e-8,
              "edit success": 0.8, "feature distance": 17.0}]
    front = pd.DataFrame(rows)
    edits = pd.DataFrame([{"method": "ddim", "guidance": 7.5, "edit success": 0.75, "feature distance": 19.0},
                          {"method": "null-text", "guidance": 7.5, "edit success": 0.97, "feature distance": 19.1}])
    text = frontier.frontier_verdict(front, edits)
    # γ = 0.4 edits best but misses 1e-6; of the exact ones the float64 network's automatic γ leads, then the ties
    # at 75% are broken by distance
    assert text.startswith("At guidance 7.5 the best exact BDIA edit is at γ = 0.274 (round trip 4e-08): read as "
                           "the target 80% of the time at a distance of 17.0 from its source, against DDIM "
                           "inversion's 75% at 19.0 and null-text inversion's 97% at 19.1: it beats DDIM inversion "
                           "on both axes.")
    assert "the rule picks γ = 0.743 for the float32 network and 0.274 for a float64 copy" in text
    worse = frontier.frontier_verdict(front[front["method"] != frontier.AUTO_FLOAT64], edits)
    assert "best exact BDIA edit is at γ = 0.5" in worse and "it beats DDIM inversion on both axes" in worse
    edits.loc[0, "feature distance"] = 16.5  # DDIM now closer: success alone does not win
    assert "does not beat DDIM inversion on both axes" in frontier.frontier_verdict(front, edits)
    # the figure draws in the book's style without a notice on the page
    import warnings

    import matplotlib as mpl
    import matplotlib.pyplot as plt

    from bdia.apps.plotting import use_book_style

    with mpl.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("error")
        use_book_style()
        controlled = front.head(2).assign(method=lambda t: t["method"] + " + feature injection")
        fig = frontier.plot_frontier(front, edits, "ci", "synthetic", controlled)
        fig.canvas.draw()
        plt.close(fig)


def test_the_control_verdict_sets_each_edit_beside_the_same_method_without_its_control():
    import pandas as pd

    from bdia.apps.book import frontier

    def rows(*items):
        return pd.DataFrame([{"method": m, "guidance": 7.5, "reconstruction error": e, "edit success": p,
                              "feature distance": d, "gamma": g} for m, e, p, d, g in items])

    edits = rows(("ddim", 0.5, 0.83, 19.0, math.nan), ("ddpm-inversion", 1e-15, 0.97, 17.4, math.nan))
    front = rows(("bdia (γ=0.4)", 7e-7, 0.86, 17.7, 0.4), ("bdia (γ=0.3)", 3e-3, 0.9, 17.0, 0.3))
    assert frontier.best_exact_gamma(front, 7.5) == 0.4 and math.isnan(frontier.best_exact_gamma(front, 3.0))
    controlled = rows(("direct-inversion + feature injection", 0.0, 0.25, 12.0, math.nan),
                      ("ddim + feature injection", 0.5, 0.75, 15.2, math.nan),
                      ("ddpm-inversion + feature injection", 1e-15, 0.86, 16.8, math.nan),
                      ("bdia (γ=0.4) + feature injection", 7e-7, 0.86, 16.2, 0.4))
    text = frontier.control_verdict(controlled, edits, front)
    assert "feature injection (twice the plain edit's network passes" in text
    assert "brings every edit closer to its source, and 2 of 3 are read as the target less often" in text
    assert "DDIM inversion 83% at 19.0 → 75% at 15.2" in text and "BDIA (γ = 0.4) 86% at 17.7 → 86% at 16.2" in text
    # a method with no edit of its own is reported, not compared
    assert "Direct Inversion, which edits only with it, is read as the target 25% of the time at 12.0." in text
    # the best exact controlled edit: ddpm-inversion (86%, 16.8) ties BDIA on success and is farther, so BDIA's
    assert text.endswith("The best exact edit with it, BDIA (γ = 0.4)'s, beats DDIM inversion's plain edit on both "
                         "axes.")
    controlled.loc[3, "feature distance"] = 19.5  # farther than without, and than DDIM's: no longer a win
    text = frontier.control_verdict(controlled, edits, front)
    assert "brings 2 of 3 edits closer to their source" in text
    assert "edit-friendly DDPM inversion's, beats DDIM inversion's plain edit" in text


def test_frontier_panels_take_their_own_step_counts_baselines():
    from bdia.apps.book import frontier

    def rows(steps, *items):
        return pd.DataFrame([{"method": m, "steps": steps, "guidance": 7.5, "reconstruction error": e,
                              "edit success": p, "feature distance": d, "gamma": 0.5} for m, e, p, d in items])

    front = pd.concat([rows(20, ("bdia (γ=0.5)", 1e-9, 0.8, 18.0)), rows(50, ("bdia (γ=0.5)", 1e-9, 0.8, 18.0)),
                       rows(50, ("edict (p=0.6)", 1e-7, 0.97, 17.8), ("edict (p=0.5)", 5e-6, 0.99, 16.0))])
    front["p"] = front["method"].str.extract(r"p=([0-9.]+)")[0].astype(float)
    edits = pd.concat([rows(20, ("ddim", 0.5, 0.9, 19.0)), rows(50, ("ddim", 0.5, 0.7, 19.5)),
                       rows(50, ("null-text", 0.1, 0.94, 21.3))])
    text = frontier.frontier_verdict(front, edits)
    # EDICT's curve is not BDIA's: its better edits never become "the best exact BDIA edit"; its own best exact
    # point (p = 0.5 misses the bar) is set against null-text inversion
    assert "best exact BDIA edit is at γ = 0.5" in text.split("50 steps")[1]
    assert ("EDICT's best exact edit is at p = 0.6: 97% at 17.8, as often read as the target as null-text "
            "inversion's edits or more, and closer to the source.") in text
    # the same BDIA point loses to DDIM inversion at 20 steps and beats it at 50: each panel its own baseline
    first, second = text.split("At guidance")[1:]
    assert first.startswith(" 7.5 and 20 steps") and "does not beat DDIM inversion" in first
    assert second.startswith(" 7.5 and 50 steps") and "DDIM inversion's 70% at 19.5 and null-text" in second
    assert "it beats DDIM inversion on both axes" in second
    assert frontier.glance(front, edits).startswith("Editing at guidance 7.5 and 50 steps")
    import warnings

    import matplotlib as mpl
    import matplotlib.pyplot as plt

    from bdia.apps.plotting import use_book_style

    with mpl.rc_context(), warnings.catch_warnings():  # both curves and their panels, without a notice
        warnings.simplefilter("error")
        use_book_style()
        fig = frontier.plot_frontier(front, edits, "ci", "synthetic")
        fig.canvas.draw()
        assert len(fig.axes) == 2 and {"BDIA over γ", "EDICT over p"} <= {t.get_text() for t in fig.legends[0].texts}
        plt.close(fig)
        # four panels, two step counts by two guidances: a grid, step counts down and guidance across
        grid = pd.concat([front, front.assign(guidance=3.0)])
        fig = frontier.plot_frontier(grid, pd.concat([edits, edits.assign(guidance=3.0)]), "ci", "synthetic")
        titles = [[ax.get_title() for ax in row] for row in (fig.axes[:2], fig.axes[2:])]
        assert fig.axes[0].get_gridspec().get_geometry() == (2, 2)
        assert titles == [["guidance 3, 20 steps", "guidance 7.5, 20 steps"],
                          ["guidance 3, 50 steps", "guidance 7.5, 50 steps"]]
        plt.close(fig)
    assert frontier.best_exact_gamma(front, 7.5, 50) == 0.5 and math.isnan(frontier.best_exact_gamma(front, 7.5, 10))


def test_frontier_runs_measure_baselines_only_where_the_benchmark_has_none():
    from bdia.apps import digits
    from bdia.apps.book import frontier
    from bdia.diffusers import load_unet

    unet = load_unet(digits.shipped_model_path())
    classifier, _ = digits.load_classifier()
    images, sources, targets = editing.held_out_pairs([(3, 8)], 2)
    schedule = bdia.VPSchedule.ddpm()
    edits, _ = editing.digit_edits(unet, classifier, images, sources, targets, schedule, 4, 0.5, [3.0],
                                   specs=("ddim",))
    front, baselines = frontier.frontier_runs(unet, classifier, images, sources, targets, schedule, 0.5,
                                              [[4, 3.0], [6, 3.0]], [1.0], edits)
    assert sorted(set(zip(front["steps"], front["method"]))) == [
        (n, m) for n in (4, 6) for m in sorted(["bdia (γ=1)", "bdia (γ=auto)", frontier.AUTO_FLOAT64])]
    # 4 steps: the benchmark's own DDIM row, reused; 6 steps: every baseline, measured
    assert baselines[baselines.steps == 4]["method"].tolist() == ["ddim"]
    assert sorted(baselines[baselines.steps == 6]["method"]) == sorted(frontier.BASELINES)
    assert (baselines.loc[baselines.steps == 6, "regenerate calls"] > 0).all()


def test_the_front_keeps_what_nothing_beats_on_both_axes_and_costs_come_from_counts_and_the_benchmark():
    from bdia.apps.book import frontier

    def rows(*items):
        return pd.DataFrame([{"method": m, "steps": 50, "guidance": 7.5, "reconstruction error": e,
                              "edit success": p, "feature distance": d, "gamma": g, "invert calls": ic,
                              "regenerate calls": rc, "backward passes": b}
                             for m, e, p, d, g, ic, rc, b in items])

    front = rows(("bdia (γ=0.6)", 9e-7, 0.83, 17.4, 0.6, 40, 39, 0), ("bdia (γ=0.4)", 0.2, 0.72, 15.0, 0.4, 40, 39, 0),
                 ("bdia (γ=1)", 4e-15, 0.39, 19.7, 1.0, 40, 39, 0))
    edits = rows(("ddim", 0.5, 0.67, 19.5, math.nan, 40, 40, 0), ("null-text", 0.1, 0.94, 21.3, math.nan, 520, 40, 400),
                 ("ddpm-inversion", 4e-15, 0.92, 17.4, math.nan, 40, 40, 0))
    # DDIM (67% at 19.5) and BDIA at 1 are beaten by BDIA at 0.6; 0.4 is the closest, null-text the most read
    assert sorted(frontier.pareto_labels(pd.concat([front, edits]))) == ["bdia (γ=0.4)", "ddpm-inversion",
                                                                        "null-text"]
    text = frontier.front_verdict(front, edits)
    assert text == ("at guidance 7.5 and 50 steps, BDIA at γ = 0.4 (round trip 2e-01), null-text inversion (round "
                    "trip 1e-01) and edit-friendly DDPM inversion (exact).")
    # a curve's points are named together, so a sentence names methods, not settings
    both = pd.concat([front, rows(("bdia (γ=0.2)", 1e-9, 0.6, 14.0, 0.2, 40, 39, 0))])
    assert "BDIA at γ = 0.4 and 0.2 (round trip 2e-01 and exact)" in frontier.front_verdict(both, edits)
    committed = [{"model": "digits-cfg", "steps": 50, "label": label, "time_ratio_to_ddim": ratio}
                 for label, ratio in [("ddim", 1.0), ("null-text", 9.9), ("ddpm-inversion", 1.07), ("bdia (γ=1)", 0.98),
                                      ("bdia (γ=0.9)", 1.02), ("bdia (γ=1, lattice=True)", 0.5)]]
    costs = frontier.recipe_costs(front, edits, committed)
    assert costs.startswith("At guidance 7.5 and 50 steps an inversion and an edit cost BDIA (γ = 0.6) 79 network "
                            "calls and 2 stored latents, 1.00 times DDIM inversion's time")
    assert "null-text inversion 560 network calls (400 backward passes besides) and 1 stored latent, 9.90 times" in costs
    assert "edit-friendly DDPM inversion 80 network calls and 41 stored latents, 1.07 times" in costs
    # gamma='auto' with a float64 copy of the network edits best: the benchmark's float32 times are not its own
    wide = pd.concat([front, rows((frontier.AUTO_FLOAT64, 2e-8, 0.85, 17.2, 0.622, 40, 39, 0))])
    costs = frontier.recipe_costs(wide, edits, committed)
    assert ("BDIA (γ = auto), float64 network 79 network calls and 2 stored latents, its time not in the benchmark"
            in costs) and "1.00 times" not in costs
    assert "(γ = 0.622, float64 network) reads as the target 85%" in frontier.glance(wide, edits)


def test_an_edict_weight_whose_inversion_overflows_is_a_point_without_an_edit():
    from bdia.apps import digits
    from bdia.apps.book import frontier
    from bdia.diffusers import load_unet

    unet = load_unet(digits.shipped_model_path())
    classifier, _ = digits.load_classifier()
    images, sources, targets = editing.held_out_pairs([(3, 8)], 2)
    # EDICT's inverse divides by p at every step: p = 1e-80 overflows float64 within four steps
    front = frontier.gamma_frontier(unet, classifier, images, sources, targets, bdia.VPSchedule.ddpm(), 5, 0.8, [3.0],
                                    [1.0], ps=[0.6, 1e-80])
    overflow = front[front.method == "edict (p=1e-80)"].iloc[0]
    assert overflow["reconstruction error"] == math.inf and math.isnan(overflow["edit success"])
    assert "edict (p=1e-80)" not in frontier.pareto_labels(front)
    assert front[front.method == "edict (p=0.6)"]["reconstruction error"].iloc[0] < 1e-6


def test_photo_controlled_edits_run_each_method_with_and_without_the_control(pipe):
    from skimage.metrics import peak_signal_noise_ratio

    from bdia.diffusers import BDIAEditPipeline, PromptToPrompt, encode_image

    edit = BDIAEditPipeline.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    pictures = photos.load_photos(["chelsea", "coffee"])  # two prompts: prompt-to-prompt runs a photo at a time
    table, shown = photos.photo_controlled_edits(edit, pictures, PromptToPrompt(), ["ddim", "direct-inversion"], 3.0,
                                                 num_steps=6)
    rows = table.set_index(["method", "control"])
    # Direct Inversion edits only beside its source branch: no row without the control
    assert sorted(rows.index) == [("ddim", "none"), ("ddim", "prompt-to-prompt"),
                                  ("direct-inversion", "prompt-to-prompt")]
    calls = rows["edit calls per image"]
    assert calls["ddim", "prompt-to-prompt"] == 2 * calls["ddim", "none"]  # both branches, each step
    # the plain DDIM edit's PSNR, recomputed here through the pipeline and scikit-image
    expected = []
    for name, picture in pictures.items():
        latent = encode_image(edit, picture, dtype=torch.float64)
        state = edit.invert(latent, photos.PHOTOS[name][1], 6, strength=0.8, guidance_scale=3.0, method="ddim")
        edited = edit.decode(edit(photos.PHOTOS[name][2], inversion=state, output_type="latent").images, "np")
        reference = edit.decode(latent, "np")
        expected.append(peak_signal_noise_ratio((reference[0] * 255).round(), (edited[0] * 255).round(),
                                                data_range=255))
    assert rows.loc[("ddim", "none"), "PSNR to the source (dB)"] == pytest.approx(sum(expected) / 2, abs=0.05)
    assert shown["ddim", "none"].shape == shown["direct-inversion", "prompt-to-prompt"].shape


def test_the_controlled_photo_verdict_counts_the_methods_the_control_helps():
    table = pd.DataFrame([
        {"method": "ddim", "control": "none", "PSNR to the source (dB)": 15.0},
        {"method": "ddim", "control": "prompt-to-prompt", "PSNR to the source (dB)": 19.5},
        {"method": "null-text", "control": "none", "PSNR to the source (dB)": 18.0},
        {"method": "null-text", "control": "prompt-to-prompt", "PSNR to the source (dB)": 17.0},
        {"method": "direct-inversion", "control": "prompt-to-prompt", "PSNR to the source (dB)": 25.0}])
    text = photos.controlled_photo_verdict(table)
    assert text == ("With prompt-to-prompt, the edits keep more of their photo for 1 of the 2 methods that also edit "
                    "without it (PSNR to the source up by 4.5 dB).")
