"""GradNetOT: closed-form Jacobians of the gradient networks, the Monge–Ampère loss, a short
training run and the end-to-end run folder."""

import math

import pytest
import torch

from ot_experiments.checks import check_compatible
from ot_experiments.errors import ConfigError
from ot_experiments.methods.gradnet import (
    GradNetOT,
    fraction_not_monotone,
    map_mse,
    monge_ampere_loss,
    monge_ampere_residual,
)
from ot_experiments.networks import MLP
from ot_experiments.networks.gradnets import MGradNetC, MGradNetM, WSoftmax
from ot_experiments.networks.jacobians import (
    autograd_jacobian,
    log_abs_det,
    logdet_psd,
    map_and_jacobian,
    mirror_upper,
    weighted_outer_sum,
)
from ot_experiments.problems import GaussianProblem, Toy2DProblem

from .conftest import read_results, run_folders, train

GRADNET_FAST = [
    "method=gradnet",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "eval_points=200",
    "mc_points=0",
    "method.batch_size=100",
    "method.eval_points=200",
    "trainer.log_every_n_steps=1",
    "logger=csv",
]

NETS = [
    (MGradNetC, {"activation": "wtanh"}),
    (MGradNetC, {"activation": "tanh"}),
    (MGradNetC, {"activation": "wtanh", "monotone": False}),
    (MGradNetM, {"activation": "wsoftmax"}),
    (MGradNetM, {"activation": "wtanh"}),
    (MGradNetM, {"activation": "wsoftmax", "monotone": False}),
]


def _random_net(cls, kw, d=5, seed=0):
    """A network with all parameters pushed far from their initial values (double)."""
    torch.manual_seed(seed)
    net = cls(d, d, **kw).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(2 * torch.randn_like(p))
    return net


@pytest.mark.parametrize(("cls", "kw"), NETS)
def test_closed_form_jacobian_equals_autograd(cls, kw):
    net = _random_net(cls, kw)
    x = 2 * torch.randn(9, 5, dtype=torch.float64)
    f, jac = net.forward_and_jacobian(x)
    assert torch.allclose(f, net(x))
    assert torch.allclose(jac, autograd_jacobian(net, x), atol=1e-10, rtol=1e-10)
    # gradient of a potential: the Jacobian is symmetric
    assert torch.allclose(jac, jac.transpose(1, 2), atol=1e-10)


@pytest.mark.parametrize(("cls", "kw"), [n for n in NETS if n[1].get("monotone", True)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_monotone_nets_have_psd_jacobian(cls, kw, seed):
    net = _random_net(cls, kw, seed=seed)
    x = 5 * torch.randn(200, 5, dtype=torch.float64)
    jac = net.jacobian(x)
    eig = torch.linalg.eigvalsh(jac)
    assert eig.min() >= -1e-9 * eig.abs().max()
    assert fraction_not_monotone(jac) == 0.0
    # monotone: <f(x) − f(y), x − y> ≥ 0
    y = 5 * torch.randn(200, 5, dtype=torch.float64)
    assert ((net(x) - net(y)) * (x - y)).sum(1).min() >= -1e-9


def test_unconstrained_gradnet_can_be_indefinite():
    found = False
    for seed in range(5):
        net = _random_net(MGradNetC, {"monotone": False}, seed=seed)
        jac = net.jacobian(3 * torch.randn(100, 5, dtype=torch.float64))
        found |= bool((torch.linalg.eigvalsh(jac)[:, 0] < -1e-6).any())
    assert found


def test_wsoftmax_jacobian_is_psd_and_matches_autograd():
    act = WSoftmax((1,)).double()
    z = 3 * torch.randn(4, 6, dtype=torch.float64)
    diag, low = act.jacobian_parts(z)
    jac = torch.diag_embed(diag) - sum(
        c[:, None, None] * v[:, :, None] * v[:, None, :] for c, v in low
    )
    auto = torch.func.vmap(torch.func.jacrev(act))(z)
    assert torch.allclose(jac, auto, atol=1e-12)
    assert torch.linalg.eigvalsh(jac).min() > -1e-12


def test_weighted_outer_sum_matches_dense_formula():
    c = torch.rand(7, 11, dtype=torch.float64)
    u = torch.randn(11, 4, dtype=torch.float64)
    a = torch.rand(7, 3, dtype=torch.float64)
    g = torch.randn(7, 3, 4, dtype=torch.float64)
    want = torch.einsum("nr,ri,rj->nij", c, u, u) - torch.einsum("nk,nki,nkj->nij", a, g, g)
    assert torch.allclose(weighted_outer_sum(c, u, [(a, g)]), want, atol=1e-12)
    upper = weighted_outer_sum(c, u, [(a, g)], upper_only=True)
    assert torch.allclose(upper.triu(), want.triu(), atol=1e-12)
    assert torch.allclose(mirror_upper(upper), want, atol=1e-12)


def test_logdet_reads_only_the_upper_triangle():
    a = torch.randn(5, 4, 4, dtype=torch.float64)
    spd = a @ a.transpose(1, 2) + 0.1 * torch.eye(4, dtype=torch.float64)
    garbage = spd.triu() + torch.randn(5, 4, 4, dtype=torch.float64).tril(-1)
    assert torch.allclose(logdet_psd(garbage), torch.linalg.slogdet(spd)[1], atol=1e-10)
    garbage[2] = torch.diag(torch.tensor([1.0, 2.0, 1.0, -1e-9], dtype=torch.float64)) + torch.ones(
        4, 4, dtype=torch.float64
    ).tril(-1)
    assert logdet_psd(garbage)[2].item() == pytest.approx(math.log(2e-9))


@pytest.mark.parametrize("cls", [MGradNetC, MGradNetM])
def test_upper_only_jacobian_gives_the_same_logdet_and_gradient(cls):
    torch.manual_seed(3)
    net = cls(5, 5).double()
    x = torch.randn(9, 5, dtype=torch.float64)
    grads = []
    for upper_only in (False, True):
        net.zero_grad()
        f, jac = net.forward_and_jacobian(x, upper_only=upper_only)
        logdet_psd(jac).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-10)


def test_logdet_cholesky_equals_slogdet_and_handles_singular():
    a = torch.randn(6, 4, 4, dtype=torch.float64)
    spd = a @ a.transpose(1, 2) + 0.1 * torch.eye(4, dtype=torch.float64)
    assert torch.allclose(logdet_psd(spd), torch.linalg.slogdet(spd)[1], atol=1e-10)
    singular = spd.clone()
    singular[0] = 0.0
    out = logdet_psd(singular)
    assert out[0] == -math.inf and torch.allclose(out[1:], torch.linalg.slogdet(spd[1:])[1])
    sym = spd - 3 * torch.eye(4, dtype=torch.float64)
    assert torch.allclose(log_abs_det(sym, psd=False), torch.linalg.slogdet(sym)[1])


def test_mlp_falls_back_to_autograd():
    net = MLP(3, 3, hidden=[16], activation="tanh")
    x = torch.randn(5, 3)
    f, jac = map_and_jacobian(net, x)
    lin0, lin1 = net.net[0], net.net[2]
    h = 1 - torch.tanh(lin0(x)).square()
    want = torch.einsum("oh,nh,hi->noi", lin1.weight, h, lin0.weight)
    assert torch.allclose(jac, want, atol=1e-5) and torch.allclose(f, net(x))


def test_monge_ampere_residual_vanishes_on_the_true_map():
    prob = GaussianProblem(2, "gaussian2d")
    x = prob.sample_source(500, generator=torch.Generator().manual_seed(0)).double()
    tx = prob.transport_true(x)
    logdet = torch.full((500,), float(torch.logdet(prob.map_matrix)), dtype=torch.float64)
    r = monge_ampere_residual(logdet, prob.log_density_source(x), prob.log_density_target(tx))
    assert r.abs().max() < 1e-10
    wrong = monge_ampere_loss(logdet, prob.log_density_source(x), prob.log_density_target(x))
    assert wrong > 0.1
    l1 = monge_ampere_loss(torch.zeros(3), torch.tensor([1.0, -2, 0]), torch.zeros(3))
    l2 = monge_ampere_loss(torch.zeros(3), torch.tensor([1.0, -2, 0]), torch.zeros(3), "l2")
    assert l1.item() == pytest.approx(1.0) and l2.item() == pytest.approx(5 / 3)
    with pytest.raises(ConfigError, match="l1 or l2"):
        monge_ampere_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), "huber")
    assert map_mse(torch.ones(4, 2), torch.zeros(4, 2)) == 1.0


def _opt(params):
    return torch.optim.Adam(params, lr=1e-2)


def test_short_training_learns_the_whitening_map():
    """200 plain-PyTorch steps of the method's loss already beat MSE 1e-2 on the 2-D example."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    prob = GaussianProblem(2, "gaussian2d")
    method = GradNetOT(prob, lambda **kw: MGradNetM(**kw), _opt, batch_size=500)
    opt = method.configure_optimizers()
    for step in range(200):
        loss, _ = method.training_loss(step)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(method.parameters(), 2.0)
        opt.step()
    x = prob.sample_source(1000, generator=torch.Generator().manual_seed(1))
    mse = method.extra_metrics(x, prob)["mse"]
    assert mse < 1e-2


def test_method_refuses_problems_without_densities():
    with pytest.raises(ConfigError, match="needs log_density"):
        check_compatible("gradnet", GradNetOT, "toy2d", Toy2DProblem(2))


def test_bad_method_options_raise_one_sentence():
    prob = GaussianProblem(2, "gaussian2d")
    with pytest.raises(ConfigError, match="l1 or l2"):
        GradNetOT(prob, lambda **kw: MGradNetM(**kw), _opt, loss="abs")
    with pytest.raises(ConfigError, match="no closed-form Jacobian"):
        GradNetOT(prob, lambda **kw: MLP(**kw), _opt, jacobian="closed_form")
    with pytest.raises(ConfigError, match="out_dim must equal in_dim"):
        MGradNetM(2, 3)
    with pytest.raises(ConfigError, match="not elementwise"):
        MGradNetC(2, 2, activation="wsoftmax")


def test_end_to_end_run_folder(tmp_path):
    # mc_points=0: the UVP on the same eval_points samples as the method's mse
    train(tmp_path, *GRADNET_FAST, "problem.preset=gaussian2d", "network=mgradnet_c", "mc_points=0")
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    assert res["status"] == "ok" and res["method"] == "gradnet"
    m = res["metrics"]
    assert m["mse"] >= 0 and m["uvp_fwd"] >= 0 and m["frac_not_monotone"] == 0.0
    # for gaussian2d, Var(ν) = 2 = d, so uvp_fwd = 100 · mse
    assert m["uvp_fwd"] == pytest.approx(100 * m["mse"], rel=1e-4)
    assert (folder / "gradnet_maps.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("network", "cls", "monotone"),
    [
        ("mgradnet_c", MGradNetC, True),
        ("mgradnet_m", MGradNetM, True),
        ("gradnet_c", MGradNetC, False),
        ("gradnet_m", MGradNetM, False),
        ("mlp_tanh", MLP, False),
    ],
)
def test_network_configs_build_with_the_method(network, cls, monotone):
    from hydra import compose, initialize_config_dir

    from ot_experiments.build import build_method, build_problem
    from ot_experiments.checks import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["method=gradnet", f"network={network}", "problem.preset=wishart", "d=40"],
        )
    method = build_method(cfg, build_problem(cfg))
    assert isinstance(method.net, cls) and method.psd == monotone
    assert method.net(torch.randn(3, 40)).shape == (3, 40)
    if cls is MGradNetC:
        assert method.net.W.shape == (40, 40)  # width max(32, d): J can be non-singular


@pytest.mark.parametrize(("d", "width"), [(2, 32), (64, 32), (65, 32), (128, 64), (200, 100)])
def test_mgradnet_m_modules_widen_beyond_d_64(d, width):
    from hydra import compose, initialize_config_dir

    from ot_experiments.checks import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["method=gradnet", "network=mgradnet_m", f"d={d}"])
    assert cfg.network.width == width and cfg.network.modules == 4  # max(32, d // 2)


def test_experiment_configs_compose():
    from hydra import compose, initialize_config_dir

    from ot_experiments.checks import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        t1d = compose("config", overrides=["experiment=t1d"], return_hydra_config=True)
        t3 = compose(
            "config",
            overrides=["experiment=t3", "problem.target_digit=3"],
            return_hydra_config=True,
        )
    assert t1d.method.name == "gradnet" and t1d.problem.preset == "wishart"
    assert t1d.hydra.sweeper.params.network == "mgradnet_c,mgradnet_m"
    assert t3.problem.name == "mnist_morphing" and t3.d == 2
    assert (t3.problem.source_digit, t3.problem.target_digit) == (
        0,
        3,
    ) and t3.optimizer._target_ == "torch.optim.AdamW"
    params = t3.hydra.sweeper.params
    assert (
        len(params["problem.source_digit"].split(","))
        * len(params["problem.target_digit"].split(","))
        == 25
    )


def test_logdet_gradient_stays_finite_when_a_cholesky_fails():
    a = torch.randn(4, 3, 3, dtype=torch.float64)
    jac = a @ a.transpose(1, 2) + 0.1 * torch.eye(3, dtype=torch.float64)
    jac[1] = torch.diag(torch.tensor([1.0, 2.0, -1e-9], dtype=torch.float64))
    jac.requires_grad_(True)
    out = logdet_psd(jac)
    out.sum().backward()
    assert out[1].item() == pytest.approx(math.log(2e-9))
    assert torch.isfinite(jac.grad).all()
