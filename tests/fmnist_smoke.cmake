# Smoke test of the fmnist program on the real data (CTest runs it with cmake -P):
# trains the seed model on a few thousand images, checks that the loss falls and the accuracy
# is far above chance, then evaluates and predicts with the saved model; and checks that bad
# command lines fail with a clear message. Exits with 77 (skipped) when the data is missing.
# The runs read a subset of the data (8000 training images, of which the last 5000 are the
# validation split, and 2000 test images) that fmnist_subset writes in the same gzip IDX
# format: the same code paths as the full set at a fraction of the cost under the sanitizers.
#   -DFMNIST=<path to fmnist> -DSUBSET=<path to fmnist_subset> -DDATA=<data dir>
#   -DOUT=<scratch dir>
cmake_minimum_required(VERSION 3.25)

include(${CMAKE_CURRENT_LIST_DIR}/fmnist_run.cmake)

# Command-line errors need no data.
run(FALSE "--frobnicate" ${FMNIST} train --frobnicate)
run(FALSE "--epochs: expected an integer from 1 to 100000, found 'zero'" ${FMNIST} train --epochs zero)
run(FALSE "--model.*resnet" ${FMNIST} train --model vgg)
run(FALSE "--tta.*(on|off)" ${FMNIST} train --tta maybe)
run(FALSE "--precise-bn" ${FMNIST} train --precise-bn -3)
run(FALSE "--tta-shift" ${FMNIST} train --tta-shift 14)
run(FALSE "--label-smoothing" ${FMNIST} train --label-smoothing 1.5)
run(FALSE "--ema" ${FMNIST} train --ema 1)
run(FALSE "--erase: expected a number from 0 to 1, found '2'" ${FMNIST} train --erase 2)
run(FALSE "--validation: expected an integer from 0 to 1000000000, found '-1'" ${FMNIST} train --validation -1)
run(FALSE "--augment.*flip" ${FMNIST} train --augment sideways)
run(FALSE "--decay-vectors.*(on|off)" ${FMNIST} train --decay-vectors sometimes)
run(FALSE "zero_init_residual': expected off for the model 'seed'" ${FMNIST} train --model seed
    --zero-init-residual on --data ${OUT}-nonexistent --out ${OUT}-nonexistent)
run(FALSE "A subcommand is required|subcommand" ${FMNIST})
run(FALSE "--distill-weight: expected a number from 0 to 1, found '2'" ${FMNIST} train --distill-weight 2)
run(FALSE "--distill-temperature: expected a number above 0" ${FMNIST} train --distill-temperature 0)
run(FALSE "--teacher: File does not exist: ${OUT}/no-teacher.mrm" ${FMNIST} train --teacher ${OUT}/no-teacher.mrm)
run(FALSE "expected --teacher FILE with them, found none" ${FMNIST} train --distill-weight 0.5
    --data ${OUT}-nonexistent --out ${OUT}-nonexistent)
# Numbers: whole, in range, and said plainly (no 309-digit bounds, no 2^64 - 1 for -1).
run(FALSE "--threads: expected an integer from 1 to 1024, found '100000'" ${FMNIST} train --threads 100000)
run(FALSE "--seed: expected an integer from 0 to 18446744073709551615, found '-1'" ${FMNIST} train --seed -1)
run(FALSE "--epochs: expected an integer from 1 to 100000, found '9223372036854775807'"
    ${FMNIST} train --epochs 9223372036854775807)
run(FALSE "--batch-size: expected an integer from 1 to 4096" ${FMNIST} train --batch-size 9223372036854775000)
run(FALSE "--warmup: expected an integer from 0 to 100000" ${FMNIST} train --warmup 9223372036854775807)
run(FALSE "--lr: expected a number above 0, at most 100, found '1e400'" ${FMNIST} train --lr 1e400)
run(FALSE "--weight-decay: expected a number from 0 to 1, found 'nan'" ${FMNIST} train --weight-decay nan)
run(FALSE "--resume.*--overwrite.*give one" ${FMNIST} train --resume --overwrite --out ${OUT}/x)
run(FALSE "--time-budget: expected a duration such as 90s, 30m, 1h or 1h30m, found '10x'"
    ${FMNIST} train --time-budget 10x --out ${OUT}/x)
run(FALSE "--time-budget and --epochs both set the length: give one"
    ${FMNIST} train --time-budget 30s --epochs 3 --out ${OUT}/x)
run(FALSE "expected at most 1024 threads, found 100000 \\(from OMP_NUM_THREADS\\)"
    ${CMAKE_COMMAND} -E env OMP_NUM_THREADS=100000 ${FMNIST} train --data ${OUT}/no-such-dir --out ${OUT}/x)
run(FALSE "load '/dev/zero': expected a regular file, found a character device"
    ${FMNIST} evaluate --model-file /dev/zero --data ${OUT}/no-such-dir)
file(MAKE_DIRECTORY ${OUT})
file(WRITE ${OUT}/a-file "")
run(FALSE "'${OUT}/a-file' is not a directory" ${FMNIST} train --data ${OUT}/a-file --out ${OUT}/x)
run(FALSE "--out '${OUT}/a-file': expected a directory, found a file" ${FMNIST} train --out ${OUT}/a-file)
run(FALSE "apt-get install dataset-fashion-mnist" ${FMNIST} train --data ${OUT}/no-such-dir --out ${OUT}/x)

if(NOT EXISTS ${DATA}/train-images-idx3-ubyte.gz AND NOT EXISTS ${DATA}/train-images-idx3-ubyte)
  message(STATUS "no Fashion-MNIST data in ${DATA}: skipping the training part")
  cmake_language(EXIT 77)
endif()

file(REMOVE_RECURSE ${OUT})
set(SUBSET_DATA ${OUT}-data)
file(REMOVE_RECURSE ${SUBSET_DATA})
run(TRUE "" ${SUBSET} ${DATA} ${SUBSET_DATA} 8000 2000)
run(TRUE "its mirror image\n.*test accuracy" ${FMNIST} train --model seed --limit 3000 --epochs 2 --threads 2
    --precise-bn 5 --label-smoothing 0.05 --ema 0.9 --augment flip --erase 0.5 --decay-vectors off --data ${SUBSET_DATA} --out ${OUT})
file(READ ${OUT}/metrics.json metrics)
string(JSON loss1 GET "${metrics}" epochs 0 train_loss)
string(JSON loss2 GET "${metrics}" epochs 1 train_loss)
string(JSON acc2 GET "${metrics}" epochs 1 train_accuracy)
string(JSON classes LENGTH "${metrics}" test confusion_matrix)
string(JSON smoothing GET "${metrics}" config label_smoothing)
if(NOT smoothing EQUAL 0.05)
  message(FATAL_ERROR "metrics.json records label_smoothing ${smoothing}, expected 0.05")
endif()
string(JSON augment GET "${metrics}" config augment)
if(NOT augment STREQUAL "flip")
  message(FATAL_ERROR "metrics.json records augment ${augment}, expected flip")
endif()
string(JSON ema GET "${metrics}" config ema)
if(NOT ema EQUAL 0.9)
  message(FATAL_ERROR "metrics.json records ema ${ema}, expected 0.9")
endif()
string(JSON erase GET "${metrics}" config erase)
if(NOT erase EQUAL 0.5)
  message(FATAL_ERROR "metrics.json records erase ${erase}, expected 0.5")
endif()
string(JSON decay_vectors GET "${metrics}" config decay_vectors)
if(decay_vectors)
  message(FATAL_ERROR "metrics.json records decay_vectors ${decay_vectors}, expected false")
endif()
message(STATUS "train loss ${loss1} -> ${loss2}, train accuracy ${acc2}")
if(NOT loss2 LESS loss1)
  message(FATAL_ERROR "the training loss did not fall: ${loss1} -> ${loss2}")
endif()
if(acc2 LESS 0.5)
  message(FATAL_ERROR "training accuracy ${acc2} is not far above chance (0.1)")
endif()
if(NOT classes EQUAL 10)
  message(FATAL_ERROR "metrics.json has a ${classes}-row confusion matrix")
endif()
foreach(f best.mrm last.mrm curves.csv curves.svg)
  if(NOT EXISTS ${OUT}/${f})
    message(FATAL_ERROR "fmnist train did not write ${OUT}/${f}")
  endif()
endforeach()

# Distillation from that run's model: the teacher runs on each image and mirror image once
# (they are cached), and metrics.json names it. A teacher trained on other preprocessing, or
# a file that is not there, is refused before training.
file(REMOVE_RECURSE ${OUT}-distill)
run(TRUE "distilling from ${OUT}/best.mrm \\(model seed, [0-9]+ parameters\\): soft-target weight 0.5, temperature 2
.*teacher: ran on [0-9]+ training samples, [0-9]+ more served from its cache
.*test accuracy 0\\.[0-9]+"
    ${FMNIST} train --model seed --limit 1000 --epochs 2 --threads 2 --augment flip
    --teacher ${OUT}/best.mrm --distill-weight 0.5 --distill-temperature 2 --data ${SUBSET_DATA}
    --out ${OUT}-distill)
file(READ ${OUT}-distill/metrics.json distill_metrics)
string(JSON teacher_file GET "${distill_metrics}" teacher file)
string(JSON distill_weight GET "${distill_metrics}" config distill_weight)
if(NOT teacher_file STREQUAL "${OUT}/best.mrm" OR NOT distill_weight EQUAL 0.5)
  message(FATAL_ERROR "metrics.json records teacher ${teacher_file}, weight ${distill_weight}")
endif()
run(FALSE "--teacher '${OUT}/best.mrm': the teacher was trained on pixels scaled to \\[0, 1\\] \\(--standardize off\\); expected the student's preprocessing, --standardize on"
    ${FMNIST} train --model seed --limit 1000 --epochs 1 --standardize on --teacher ${OUT}/best.mrm
    --data ${SUBSET_DATA} --out ${OUT}-distill2)

# No validation set (--validation 0): all training images train, best.mrm is the epoch with the
# best training accuracy, evaluate says there is nothing to validate on. The pixel statistics
# then come from all training images, so a model trained so cannot teach a run that holds out
# a validation set; and some images must train.
file(REMOVE_RECURSE ${OUT}-noval)
run(TRUE "validation 0.*best training accuracy 0\\.[0-9]+ at epoch [12] .*test accuracy 0\\.[0-9]+"
    ${FMNIST} train --model seed --validation 0 --limit 1000 --epochs 2 --threads 2
    --standardize on --data ${SUBSET_DATA} --out ${OUT}-noval)
file(READ ${OUT}-noval/metrics.json noval_metrics)
string(JSON noval_config GET "${noval_metrics}" config validation)
string(JSON noval_data GET "${noval_metrics}" data validation)
string(JSON noval_val_acc GET "${noval_metrics}" epochs 1 val_accuracy)
if(NOT noval_config EQUAL 0 OR NOT noval_data EQUAL 0 OR NOT noval_val_acc STREQUAL "")
  message(FATAL_ERROR "metrics.json of a --validation 0 run: config ${noval_config}, data "
                      "${noval_data}, validation accuracy ${noval_val_acc}")
endif()
run(TRUE "no validation images.*test accuracy 0\\.[0-9]+"
    ${FMNIST} evaluate --model-file ${OUT}-noval/best.mrm --data ${SUBSET_DATA})
run(FALSE "the teacher standardised its pixels with the statistics of the training images outside its last 0 \\(--validation 0\\); expected the student's statistics, --validation 5000"
    ${FMNIST} train --model seed --limit 1000 --epochs 1 --standardize on
    --teacher ${OUT}-noval/best.mrm --data ${SUBSET_DATA} --out ${OUT}-distill2)
# A budget without validation says so.
file(REMOVE_RECURSE ${OUT}-noval-budget)
run(TRUE "time budget 6 s: [0-9]+ epochs of [0-9]+ steps .* per epoch without validation.*best training accuracy"
    ${FMNIST} train --model seed --validation 0 --limit 1000 --time-budget 6s --threads 2
    --data ${SUBSET_DATA} --out ${OUT}-noval-budget)
# Without standardisation a teacher with another split is fine, unless it trained on images
# the student validates on.
run(FALSE "the teacher trained on all but the last 5000 training images \\(--validation 5000\\), some of those the student validates on; expected a teacher with --validation 6000 or more"
    ${FMNIST} train --model seed --limit 1000 --epochs 1 --validation 6000
    --teacher ${OUT}/best.mrm --data ${SUBSET_DATA} --out ${OUT}-distill2)
run(FALSE "--validation: expected fewer than the 8000 training images \\(some must train\\), found 8000"
    ${FMNIST} train --model seed --validation 8000 --epochs 1 --data ${SUBSET_DATA}
    --out ${OUT}-noval2)

# A time budget: the run plans its epochs from the speed it measures, ends on time (the budget
# covers everything from the start of the command) and writes complete outputs.
file(REMOVE_RECURSE ${OUT}-budget)
string(TIMESTAMP budget_start "%s")
run(TRUE "time budget 25 s: [0-9]+ epochs of 16 steps at ~[0-9]+ images/s \\(measured\\): ~[0-9.]+ [a-z]+ per epoch with validation.*test accuracy 0\\.[0-9]+"
    ${FMNIST} train --model seed --limit 2000 --time-budget 25s --threads 2 --data ${SUBSET_DATA}
    --out ${OUT}-budget)
string(TIMESTAMP budget_end "%s")
math(EXPR budget_took "${budget_end} - ${budget_start}")
if(budget_took GREATER 28)
  message(FATAL_ERROR "a 25 s time budget took ${budget_took} s")
endif()
file(READ ${OUT}-budget/metrics.json budget_metrics)
string(JSON budget_seconds GET "${budget_metrics}" time_budget seconds)
string(JSON budget_epochs GET "${budget_metrics}" time_budget epochs)
string(JSON config_epochs GET "${budget_metrics}" config epochs)
string(JSON run_epochs LENGTH "${budget_metrics}" epochs)
string(JSON budget_changes LENGTH "${budget_metrics}" time_budget changes)
string(JSON budget_exact GET "${budget_metrics}" time_budget same_as_epochs_flag)
if(NOT budget_seconds EQUAL 25 OR NOT budget_epochs EQUAL run_epochs
   OR NOT config_epochs EQUAL run_epochs)
  message(FATAL_ERROR "metrics.json: budget ${budget_seconds} s, ${budget_epochs} epochs planned, "
                      "config epochs ${config_epochs}, ${run_epochs} run")
endif()
foreach(f best.mrm last.mrm curves.csv curves.svg)
  if(NOT EXISTS ${OUT}-budget/${f})
    message(FATAL_ERROR "the time-budget run did not write ${OUT}-budget/${f}")
  endif()
endforeach()
message(STATUS "a 25 s budget: ${run_epochs} epochs in ${budget_took} s, ${budget_changes} "
               "change(s) of plan, the same as --epochs ${run_epochs}: ${budget_exact}")
# The checkpoint holds the final length too (a change of plan is recorded before the epoch's
# checkpoint is written): resuming the finished run trains nothing more, it only tests again.
run(TRUE "resuming after epoch ${run_epochs} .*test accuracy 0\\.[0-9]+"
    ${FMNIST} train --resume --threads 2 --data ${SUBSET_DATA} --out ${OUT}-budget)
if(last_output MATCHES "epoch [0-9]+/[0-9]+  loss")
  message(FATAL_ERROR "resuming the finished budget run trained again:\n${last_output}")
endif()

run(TRUE "test accuracy 0\\.[0-9]+" ${FMNIST} evaluate --model-file ${OUT}/best.mrm --data ${SUBSET_DATA})
run(TRUE "test-time augmentation.*validation accuracy 0\\.[0-9]+.*test accuracy 0\\.[0-9]+"
    ${FMNIST} evaluate --model-file ${OUT}/best.mrm --tta on --precise-bn 5 --data ${SUBSET_DATA})
run(TRUE "shifted by 1 pixel.*test accuracy 0\\.[0-9]+"
    ${FMNIST} evaluate --model-file ${OUT}/best.mrm --tta off --tta-shift 1 --data ${SUBSET_DATA})
run(TRUE "image 2: [A-Za-z/ ]+ 0\\.[0-9]+.*true: " ${FMNIST} predict --model-file ${OUT}/best.mrm --count 3 --data ${SUBSET_DATA})
run(TRUE "test images: the first 500 of 2000.*test accuracy 0\\.[0-9]+"
    ${FMNIST} evaluate --model-file ${OUT}/best.mrm --test-limit 500 --data ${SUBSET_DATA})
run(FALSE "--test-limit: expected at most the 2000 test images, found 5000"
    ${FMNIST} evaluate --model-file ${OUT}/best.mrm --test-limit 5000 --data ${SUBSET_DATA})
run(FALSE "--model-file" ${FMNIST} evaluate --model-file ${OUT}/missing.mrm --data ${SUBSET_DATA})
file(WRITE ${OUT}/garbage.mrm "not a model")
run(FALSE "not a minires model" ${FMNIST} evaluate --model-file ${OUT}/garbage.mrm --data ${SUBSET_DATA})
# A new run never overwrites a saved one unasked.
file(SHA256 ${OUT}/metrics.json metrics_before)
run(FALSE "already holds a run.*--resume.*--overwrite" ${FMNIST} train --model seed --limit 1000 --epochs 1 --data ${SUBSET_DATA} --out ${OUT})
file(SHA256 ${OUT}/metrics.json metrics_after)
if(NOT metrics_before STREQUAL metrics_after)
  message(FATAL_ERROR "a refused run changed ${OUT}/metrics.json")
endif()

# --resume keeps the stored settings: a flag that disagrees is refused, one that agrees is fine
run(FALSE "--lr 0.5 \\(the run has 0.001\\).*--tta off \\(the run has on\\)" ${FMNIST} train --out ${OUT} --resume --lr 0.5 --tta off --data ${SUBSET_DATA})
run(FALSE "already completed epoch 2" ${FMNIST} train --out ${OUT} --resume --epochs 1 --data ${SUBSET_DATA})
# A temporary file left by a run killed while saving is removed by the next run.
file(WRITE ${OUT}/last.mrm.tmp-999999999 "partial")
# --resume continues a finished run for one more epoch
run(TRUE "removed .*last.mrm.tmp-999999999.*resuming after epoch 2.*settings stored there"
    ${FMNIST} train --out ${OUT} --resume --epochs 3 --model seed --data ${SUBSET_DATA})
if(EXISTS ${OUT}/last.mrm.tmp-999999999)
  message(FATAL_ERROR "the stale temporary file was not removed")
endif()
file(READ ${OUT}/metrics.json metrics)
string(JSON best_epoch GET "${metrics}" test best_epoch)
if(best_epoch LESS 1)
  message(FATAL_ERROR "metrics.json records best_epoch ${best_epoch} after a resume")
endif()

# A full disk (here a file-size limit) fails the save with the reason and keeps the last
# complete checkpoint intact, with no temporary file left.
find_program(PRLIMIT prlimit)
if(PRLIMIT)
  file(SHA256 ${OUT}/last.mrm last_before)
  file(SHA256 ${OUT}/best.mrm best_before)
  run(FALSE "save '.*(last|best).mrm'.*File too large.*unchanged"
      ${PRLIMIT} --fsize=60000 ${FMNIST} train --out ${OUT} --resume --epochs 4 --data ${SUBSET_DATA})
  file(SHA256 ${OUT}/last.mrm last_after)
  file(SHA256 ${OUT}/best.mrm best_after)
  if(NOT last_before STREQUAL last_after OR NOT best_before STREQUAL best_after)
    message(FATAL_ERROR "a failed save changed a checkpoint")
  endif()
  file(GLOB leftovers ${OUT}/*.tmp-*)
  if(leftovers)
    message(FATAL_ERROR "a failed save left ${leftovers}")
  endif()
endif()

# --precision bf16: the ResNet trains in bfloat16 where the build and the CPU have AMX, and
# records it; elsewhere the run is refused with the reason, before it writes anything.
# The ResNet runs here test one view per image: the ten views that --augment on (the ResNet's
# default) implies cost ten forward passes of the 2000 test images, close to ten minutes under
# the sanitizers on a slow 2-core host.
execute_process(COMMAND ${FMNIST} train --precision bf16 --limit 640 --validation 320 --epochs 1
                        --tta off --tta-shift 0 --threads 2 --data ${SUBSET_DATA} --out ${OUT}/bf16
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 600)
if(rc EQUAL 0)
  file(READ ${OUT}/bf16/metrics.json metrics)
  string(JSON precision GET "${metrics}" config precision)
  string(JSON bf16_acc GET "${metrics}" test accuracy)
  if(NOT precision STREQUAL "bf16")
    message(FATAL_ERROR "metrics.json records precision ${precision}, expected bf16")
  endif()
  set(expected_precision bf16)
  message(STATUS "ok: --precision bf16 trained on AMX (test accuracy ${bf16_acc})")
  # evaluate runs it as it was trained (bf16 here).
  run(TRUE "test accuracy" ${FMNIST} evaluate --model-file ${OUT}/bf16/best.mrm --data ${SUBSET_DATA})
elseif("${out}${err}" MATCHES "--precision bf16: expected a CPU with AMX-BF16")
  if(EXISTS ${OUT}/bf16/metrics.json)
    message(FATAL_ERROR "a refused --precision bf16 run wrote metrics.json")
  endif()
  set(expected_precision fp32)
  message(STATUS "ok: --precision bf16 refused without AMX")
else()
  message(FATAL_ERROR "--precision bf16 failed (${rc}) without saying why:\n${out}${err}")
endif()

# Without --precision the ResNet takes bf16 where AMX is (the run above trained) and fp32 where
# it is not (the run above was refused), and says which in its first line.
run(TRUE "model resnet  precision ${expected_precision}  threads" ${FMNIST} train --limit 320
    --validation 160 --epochs 1 --tta off --tta-shift 0 --threads 2 --data ${SUBSET_DATA}
    --out ${OUT}/default-precision)
file(READ ${OUT}/default-precision/metrics.json metrics)
string(JSON precision GET "${metrics}" config precision)
if(NOT precision STREQUAL expected_precision)
  message(FATAL_ERROR "the default ResNet run records precision ${precision}, expected "
                      "${expected_precision}")
endif()

# A second run into a directory that a run is writing into fails at once.
find_program(FLOCK flock)
if(FLOCK)
  run(FALSE "another fmnist run is writing into this directory"
      ${FLOCK} ${OUT}/fmnist.lock ${FMNIST} train --out ${OUT} --resume --epochs 5 --data ${SUBSET_DATA})
endif()

# Ctrl-C before the first epoch ends: no checkpoint exists, and the message says so. This run
# reads the full data, so that its first epoch outlasts the 3 s on any host. --foreground:
# timeout then signals fmnist alone; without it, it also signals its own process group, and a
# second SIGINT that arrives after the first was handled ends fmnist at once (as a second
# Ctrl-C should), before it can say anything.
run(FALSE "interrupted before the first epoch ended: no checkpoint was written.*start again with: .*fmnist train --out"
    timeout --foreground --preserve-status -s INT 3 ${FMNIST} train --out ${OUT}/interrupted --data ${DATA})
if(EXISTS ${OUT}/interrupted/last.mrm)
  message(FATAL_ERROR "an interrupted first epoch left a checkpoint")
endif()
file(REMOVE_RECURSE ${OUT} ${SUBSET_DATA})
