# Hub assets for compute nodes without network: run `snakemake download` once on a login node
# with network (HF_HOME on the shared file system), then the study with HF_HUB_OFFLINE=1.


rule download:
    """Fetch every hub dataset the config names (at its revision, loaded as the data stage
    loads it) and the hub model's config, safetensors weights and tokenizer files (at
    model.revision) into the Hugging Face cache; offline, only verify they are there. Not part
    of `all`: it runs on the machine that runs Snakemake, never on a compute node."""
    input:
        code=code("download"),
    output:
        manifest=ensure("results/download/manifest.json", non_empty=True),
    log:
        log_path("download"),
    localrule: True
    conda:
        "../../envs/unlearnbench.yaml"
    params:
        assets=canonical(hub_assets(config)),
    script:
        "../scripts/download.py"
