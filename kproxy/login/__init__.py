"""Client side: the kubectl credential plugin and the kubeconfig writer."""
