"""Real etcd + kube-apiserver + Kafka on loopback for development and tests.

Entry points: :class:`pushrelay_devstack.stack.Devstack`,
:func:`pushrelay_devstack.stack.mint_user_kubeconfig` and
:func:`tests.devstack_fixtures.ensure_devstack`.
"""
