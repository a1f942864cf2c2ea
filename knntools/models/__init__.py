"""Networks for knntools: architectures + registry, training loop, layer extraction, attacks, checkpoints.

Modules (import them directly; nothing heavy is imported here):

* :mod:`knntools.models.registry`      ``build_model(arch, input_shape, n_classes, **kwargs)``, ``arch_names()``,
  ``check_arch()``, ``model_layers()`` — knntools architectures and torchvision models by name
* :mod:`knntools.models.architectures` MLP-640, LeNet-5, the DkNN CNN, ResNet-20, WRN, VGG-13, ResNet-10, FFN
* :mod:`knntools.models.training`      ``fit_classifier()`` (what ``knntools train`` runs), ``TrainConfig``, ``train_model()``,
  ``evaluate()``, ``normalization_stats()``
* :mod:`knntools.models.features`      ``plan_embedding()`` + ``write_activations()`` (what ``knntools embed`` runs),
  ``load_network()``, ``resolve_layers()``, ``describe_layers()``, ``iter_activations()``
* :mod:`knntools.models.attacks`       ``fgsm()``, ``pgd()``
* :mod:`knntools.models.checkpoint`    the one ``.pt`` format of every kind (model, knet, seq2knn): ``write_checkpoint()``,
  ``read_checkpoint()``, ``model_from_checkpoint()``

See docs/train_embed.md.
"""
