# Smoke test of the fmnist program on the real data (CTest runs it with cmake -P):
# trains the seed model on a few thousand images, checks that the loss falls and the accuracy
# is far above chance, then evaluates and predicts with the saved model; and checks that bad
# command lines fail with a clear message. Exits with 77 (skipped) when the data is missing.
#   -DFMNIST=<path to fmnist> -DDATA=<data dir> -DOUT=<scratch dir>
cmake_minimum_required(VERSION 3.25)

function(run expect_success expect_output)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(all "${out}${err}")
  if(expect_success AND NOT rc EQUAL 0)
    message(FATAL_ERROR "'${ARGN}' failed (${rc}):\n${all}")
  endif()
  if(NOT expect_success AND rc EQUAL 0)
    message(FATAL_ERROR "'${ARGN}' should have failed but exited 0:\n${all}")
  endif()
  if(NOT all MATCHES "${expect_output}")
    message(FATAL_ERROR "'${ARGN}': expected output matching '${expect_output}', found:\n${all}")
  endif()
  message(STATUS "ok: ${ARGN}")
endfunction()

# Command-line errors need no data.
run(FALSE "--frobnicate" ${FMNIST} train --frobnicate)
run(FALSE "--epochs.*(not|Value)" ${FMNIST} train --epochs zero)
run(FALSE "--model.*resnet" ${FMNIST} train --model vgg)
run(FALSE "--tta.*(on|off)" ${FMNIST} train --tta maybe)
run(FALSE "--precise-bn" ${FMNIST} train --precise-bn -3)
run(FALSE "--tta-shift" ${FMNIST} train --tta-shift 14)
run(FALSE "--label-smoothing" ${FMNIST} train --label-smoothing 1.5)
run(FALSE "A subcommand is required|subcommand" ${FMNIST})
run(FALSE "apt-get install dataset-fashion-mnist" ${FMNIST} train --data ${OUT}/no-such-dir --out ${OUT}/x)

if(NOT EXISTS ${DATA}/train-images-idx3-ubyte.gz AND NOT EXISTS ${DATA}/train-images-idx3-ubyte)
  message(STATUS "no Fashion-MNIST data in ${DATA}: skipping the training part")
  cmake_language(EXIT 77)
endif()

file(REMOVE_RECURSE ${OUT})
run(TRUE "test accuracy" ${FMNIST} train --model seed --limit 3000 --epochs 2 --threads 2
    --precise-bn 5 --label-smoothing 0.05 --data ${DATA} --out ${OUT})
file(READ ${OUT}/metrics.json metrics)
string(JSON loss1 GET "${metrics}" epochs 0 train_loss)
string(JSON loss2 GET "${metrics}" epochs 1 train_loss)
string(JSON acc2 GET "${metrics}" epochs 1 train_accuracy)
string(JSON classes LENGTH "${metrics}" test confusion_matrix)
string(JSON smoothing GET "${metrics}" config label_smoothing)
if(NOT smoothing EQUAL 0.05)
  message(FATAL_ERROR "metrics.json records label_smoothing ${smoothing}, expected 0.05")
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

run(TRUE "test accuracy 0\\.[0-9]+" ${FMNIST} evaluate --model-file ${OUT}/best.mrm --data ${DATA})
run(TRUE "test-time augmentation.*validation accuracy 0\\.[0-9]+.*test accuracy 0\\.[0-9]+"
    ${FMNIST} evaluate --model-file ${OUT}/best.mrm --tta on --precise-bn 5 --data ${DATA})
run(TRUE "shifted by 1 pixel.*test accuracy 0\\.[0-9]+"
    ${FMNIST} evaluate --model-file ${OUT}/best.mrm --tta off --tta-shift 1 --data ${DATA})
run(TRUE "image 2: [A-Za-z/ ]+ 0\\.[0-9]+.*true: " ${FMNIST} predict --model-file ${OUT}/best.mrm --count 3 --data ${DATA})
run(FALSE "--model-file" ${FMNIST} evaluate --model-file ${OUT}/missing.mrm --data ${DATA})
file(WRITE ${OUT}/garbage.mrm "not a model")
run(FALSE "not a minires model" ${FMNIST} evaluate --model-file ${OUT}/garbage.mrm --data ${DATA})
# --resume continues a finished run for one more epoch
run(TRUE "resuming after epoch 2" ${FMNIST} train --out ${OUT} --resume --epochs 3 --data ${DATA})
file(REMOVE_RECURSE ${OUT})
