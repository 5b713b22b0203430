"""Real etcd + kube-apiserver + Kafka on loopback for development and tests.

Entry points: :class:`pushrelay.devstack.stack.Devstack`,
:func:`pushrelay.devstack.stack.mint_user_kubeconfig` and
:func:`pushrelay.devstack.testing.ensure_devstack`.
"""
